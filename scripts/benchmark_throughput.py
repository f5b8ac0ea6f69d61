"""Training throughput: FixMatch, WRN-28-2, synthetic CIFAR-shaped data, each speed option on and off.

    python scripts/benchmark_throughput.py                       # the GPU when there is one, else the CPU
    python scripts/benchmark_throughput.py --device cpu --batch-size 16 --steps 6
    python scripts/benchmark_throughput.py --rows fp32 bf16 all   # a subset of the option rows

Every row trains the real `ssl-train` configuration (`build(cfg)`, Lightning
`trainer.fit`) for warm-up + timed steps and reports the median step time.
Besides the option rows it times, on the same device and batch:

- `data pipeline alone`: the training loader plus view building
  (`on_after_batch_transfer`: weak + strong augmentation), no model;
- `model step alone`: forward, backward and optimizer step of the framework's
  FixMatch module on one fixed, already augmented batch, no data loading;
- `hand-written loop`: a minimal PyTorch loop doing the same math (same data
  module batches, network, FixMatch loss, SGD, cosine schedule, EMA) without
  Lightning. Framework overhead = hand-written step rate / framework step rate.

The table goes to docs/results/throughput.md (raw numbers: throughput.json).
Issue targets (GPU, one H100, bf16): at least 100 steps/s; data pipeline at
least 2x the model step rate; framework overhead at most 1.05 (CPU and GPU).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from lightning_utilities.core.apply_func import apply_to_collection

from ssl_train import losses
from ssl_train.algorithms.ema import EMA
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.run.config import compose
from ssl_train.run.training import build

ROOT = Path(__file__).resolve().parent.parent
ROWS = {  # option rows: overrides on top of the base configuration
    "fp32": [],
    "bf16": ["trainer.precision=bf16-mixed"],
    "channels_last": ["speed.channels_last=true"],
    "compile": ["speed.compile=true"],
    "fused_sgd": ["optimizer.fused=true"],
    "cudnn_benchmark": ["trainer.benchmark=true"],
    "augment_in_loader": ["data.augment_on=loader"],
    "all": ["speed=fast"],
}


def base_overrides(args) -> list[str]:
    return ["data=synthetic", "data.dataset.num_samples=4000", "data.num_labels=250", "model=wrn28_2",
            "algorithm=fixmatch", f"data.batch_size={args.batch_size}", f"data.mu={args.mu}",
            f"data.num_workers={args.workers}", f"trainer.accelerator={args.device}",
            f"trainer.max_steps={args.warmup + args.steps}", "trainer.val_check_interval=1000000",
            "+trainer.enable_checkpointing=false", "+trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
            "~logger", "~callbacks", "test=false"]


def compose_config(overrides: list[str]):
    return compose("config", [*overrides, "paths.output_dir=runs/benchmark_throughput"])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(L.Callback):
    """Wall time between consecutive training-batch ends (data loading included), device synchronized."""

    def __init__(self):
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        sync(pl_module.device)
        self.stamps.append(time.perf_counter())


def to_device(batch: dict, device: torch.device) -> dict:
    return apply_to_collection(batch, torch.Tensor, lambda t: t.to(device, non_blocking=True))


def median_interval(stamps: list[float], warmup: int) -> float:
    intervals = [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])]
    return statistics.median(intervals)


def framework_step(overrides: list[str], warmup: int) -> float:
    cfg = compose_config(overrides)
    datamodule, model, trainer = build(cfg)
    timer = StepTimer()
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=datamodule)
    return median_interval(timer.stamps, warmup)


def data_pipeline_step(overrides: list[str], warmup: int, steps: int, device: torch.device) -> float:
    """Loader + transfer + view building, as the trainer runs them, without a model."""
    datamodule, model, _ = build(compose_config(overrides))
    datamodule.views = model.unlabeled_views  # no trainer here to read them from
    stamps, loader = [], iter(datamodule.train_dataloader())
    for _ in range(warmup + steps):
        datamodule.on_after_batch_transfer(to_device(next(loader), device), 0)
        sync(device)
        stamps.append(time.perf_counter())
    return median_interval(stamps, warmup)


def fixed_batch(datamodule, device: torch.device) -> dict:
    raw = datamodule.train_dataloader().dataset[0]
    batch = datamodule.on_after_batch_transfer(to_device(raw, device), 0)
    batch.pop("ulb_truth", None)
    return batch


def model_step(overrides: list[str], warmup: int, steps: int, device: torch.device) -> float:
    """The framework module's loss, backward and SGD step on one fixed, already augmented batch."""
    datamodule, model, _ = build(compose_config(overrides))
    model.to(device).train()
    batch = fixed_batch(datamodule, device)
    optimizer = torch.optim.SGD(model.net.parameters(), lr=0.03, momentum=0.9, nesterov=True)
    stamps = []
    for _ in range(warmup + steps):
        out = model.losses(batch)
        loss = out.sup + out.unsup
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        stamps.append(time.perf_counter())
    return median_interval(stamps, warmup)


def hand_written_step(overrides: list[str], warmup: int, steps: int, device: torch.device) -> float:
    """The same math as the framework's FixMatch step, in plain PyTorch: the overhead reference."""
    cfg = compose_config(overrides)
    datamodule, model, _ = build(cfg)
    net = model.net.to(device).train()
    ema = EMA(net, 0.999)
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=0.03, momentum=0.9, nesterov=True)
    total = warmup + steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: losses.cosine_lr_factor(k, total))
    datamodule.views = model.unlabeled_views  # no trainer here to read them from
    loader = iter(datamodule.train_dataloader())
    stamps = []
    for _ in range(total):
        batch = datamodule.on_after_batch_transfer(to_device(next(loader), device), 0)
        views = [batch["lb"]["x"], batch["ulb"]["weak"], batch["ulb"]["strong"]]
        logits_lb, logits_weak, logits_strong = net(torch.cat(views)).split([len(v) for v in views])
        unsup, mask, _ = losses.fixmatch_loss(logits_weak.detach().float().softmax(-1), logits_strong, 0.95)
        loss = torch.nn.functional.cross_entropy(logits_lb, batch["lb"]["y"]) + unsup
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update_parameters(net)
        sync(device)
        stamps.append(time.perf_counter())
    return median_interval(stamps, warmup)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} torch threads"


def write_report(results: dict, out: Path) -> None:
    images = results["images_per_step"]
    lines = [
        "# Training throughput", "",
        f"Command: `{results['command']}`", "",
        f"Device: {results['device']}; torch {torch.__version__}. FixMatch, WRN-28-2 (1.47M parameters), "
        f"synthetic 3x32x32 images, B={results['batch_size']}, mu={results['mu']} "
        f"({images} images per step), {results['workers']} loader workers. Median of {results['steps']} timed steps "
        f"after {results['warmup']} warm-up steps.", "",
        "A folder of image files through the decoded cache, against decoding the files: "
        "[data_pipeline.md](data_pipeline.md).", "",
        "| configuration | median step (ms) | steps/s | images/s |", "|---|---|---|---|",
    ]
    for name, seconds in results["rows"].items():
        lines.append(f"| {name} | {seconds * 1e3:.1f} | {1 / seconds:.2f} | {images / seconds:.0f} |")
    data, step = results["data_pipeline_s"], results["model_step_s"]
    hand, frame = results["hand_written_s"], results["rows"]["fp32"]
    lines += [
        f"| data pipeline alone (loader + weak/strong views) | {data * 1e3:.1f} | {1 / data:.2f} "
        f"| {images / data:.0f} |",
        f"| model step alone (fixed batch) | {step * 1e3:.1f} | {1 / step:.2f} | {images / step:.0f} |",
        f"| hand-written PyTorch loop (fp32) | {hand * 1e3:.1f} | {1 / hand:.2f} | {images / hand:.0f} |",
        "", "## Ratios", "",
        f"- data pipeline rate / model step rate: {step / data:.2f} (target >= 2 on the GPU)",
        f"- framework overhead (hand-written rate / framework rate, fp32): {frame / hand:.3f} (target <= 1.05)",
    ]
    if results.get("note"):
        lines += ["", "## Notes", "", results["note"]]
    write_text_atomic(out / "throughput.md", "\n".join(lines) + "\n")
    write_json_atomic(out / "throughput.json", results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--workers", type=int, default=4 if torch.cuda.is_available() else 0,
                        help="loader workers (default: 4 with a GPU, 0 on a CPU, whose cores train)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps (compilation, autotuning)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    base = base_overrides(args)
    rows = {}
    for name in dict.fromkeys(["fp32", *args.rows]):
        rows[name] = framework_step(base + ROWS[name], args.warmup)
        print(f"{name}: {rows[name] * 1e3:.1f} ms/step", flush=True)
    results = {
        "command": "python scripts/benchmark_throughput.py " + " ".join(
            [f"--device {args.device}", f"--batch-size {args.batch_size}", f"--mu {args.mu}",
             f"--workers {args.workers}", f"--warmup {args.warmup}", f"--steps {args.steps}",
             "--rows " + " ".join(args.rows)]),
        "device": device_name(device), "batch_size": args.batch_size, "mu": args.mu, "workers": args.workers,
        "images_per_step": args.batch_size * (1 + 2 * args.mu), "warmup": args.warmup, "steps": args.steps,
        "rows": rows,
        "data_pipeline_s": data_pipeline_step(base, args.warmup, args.steps, device),
        "model_step_s": model_step(base, args.warmup, args.steps, device),
        "hand_written_s": hand_written_step(base, args.warmup, args.steps, device),
        "note": args.note,
    }
    write_report(results, args.out)
    print((args.out / "throughput.md").read_text())


if __name__ == "__main__":
    main()
