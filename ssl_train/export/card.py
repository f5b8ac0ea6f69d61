"""metadata.json and MODEL_CARD.md: what a deployer needs to feed the model and to trust it.

Pure functions of plain dicts: the pipeline measures, this module only
arranges. metadata.json is the machine-readable record (the card is rendered
from it, so the two cannot disagree).
"""

from __future__ import annotations

from typing import Any

FORMATS = {
    "model.ts": "TorchScript, frozen, fp32",
    "model_int8.ts": "TorchScript, frozen, int8",
    "model.pt2": "torch.export program, fp32",
    "model.onnx": "ONNX, fp32",
}
REFERENCE = "eager fp32 (reference)"


def _short(node: dict | None) -> str:
    return str((node or {}).get("_target_", "?")).rsplit(".", 1)[-1]


def _args(node: dict | None) -> dict:
    return {k: v for k, v in (node or {}).items() if not k.startswith("_") and not isinstance(v, dict)}


def training_summary(config: dict, global_step: int, labeled: int | None = None) -> dict[str, Any]:
    """The run config in the few lines a reader of the card needs; `labeled` is how many labeled images trained
    (a folder's run has data.num_labels = null: all of its labeled images but the carved ones)."""
    data, trainer = config.get("data", {}), config.get("trainer", {})
    return {
        "algorithm": _short(config.get("algorithm")), "algorithm_args": _args(config.get("algorithm")),
        "model": _short(config.get("model")), "model_args": _args(config.get("model")),
        "dataset": _short(data.get("dataset")), "dataset_args": _args(data.get("dataset")),
        "num_labels": labeled if labeled is not None else data.get("num_labels"),
        "batch_size": data.get("batch_size"), "mu": data.get("mu"),
        "optimizer": _short(config.get("optimizer")), "optimizer_args": _args(config.get("optimizer")),
        "seed": config.get("seed"), "max_steps": trainer.get("max_steps"), "checkpoint_step": global_step,
    }


def scaling_note(scale: float) -> str:
    inverse = 1 / scale
    return f"raw pixel value / {inverse:g}" if abs(inverse - round(inverse)) < 1e-6 else f"raw pixel value × {scale:g}"


def artifact_table(meta: dict) -> str:
    """Markdown table: one row per artifact plus the eager reference."""
    sizes = meta["export"]["latency"]["batch_sizes"]
    head = ["artifact", "format", "size", "test acc", "macro-F1", "ECE"] + [f"CPU ms @{b}" for b in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = sorted(meta["artifacts"], key=lambda n: list(FORMATS).index(n) if n in FORMATS else len(FORMATS))
    rows = [(REFERENCE, "PyTorch eager", meta["reference"])] + [
        (name, FORMATS.get(name, "?"), meta["artifacts"][name]) for name in names]
    for name, fmt, entry in rows:
        size = f"{entry['size_bytes'] / 1024:.1f} KiB" if "size_bytes" in entry else "–"
        cells = [name, fmt, size, f"{entry['acc']:.4f}", f"{entry['f1_macro']:.4f}", f"{entry['ece']:.4f}"]
        cells += [f"{entry['latency_ms'][str(b)]:.3f}" for b in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_card(meta: dict) -> str:
    """MODEL_CARD.md from metadata.json's content."""
    src, inp, train, exp = meta["source_checkpoint"], meta["input"], meta["training"], meta["export"]
    lat, int8 = exp["latency"], exp.get("int8")
    shape = "×".join(str(d) for d in inp["shape"])
    lines = [
        f"# Model card: {train['model']} trained with {train['algorithm']} on {train['dataset']}", "",
        "## Input and output", "",
        f"- Input: `float32` tensor of shape {shape} (NCHW, any batch size N), pixel values in [0, 1]: "
        f"{inp['scaling']}.",
        f"- Normalization (mean {_floats(inp['normalization']['mean'])}, std {_floats(inp['normalization']['std'])}) "
        "is inside every artifact: do not normalize again.",
        f"- Output: logits of shape N×{len(meta['classes'])}; softmax gives class probabilities. "
        f"Classes, in order: {', '.join(map(str, meta['classes']))}.", "",
        "## Source", "",
        f"- Checkpoint: `{src['path']}` (step {src['global_step']}, {src['weights']} weights)",
        f"- SHA-256: `{src['sha256']}`",
        f"- Parameters: {meta['model']['num_parameters']:,}", "",
        "## Training", "",
        f"- {train['algorithm']}{arguments(train['algorithm_args'])}",
        f"- {train['model']}{arguments(train['model_args'])}",
        f"- {train['dataset']}{arguments(train['dataset_args'])}, {train['num_labels']} labels, "
        f"batch {train['batch_size']}, μ={train['mu']}, seed {train['seed']}",
        f"- {train['optimizer']}{arguments(train['optimizer_args'])}, {train['max_steps']} steps", "",
        "## Artifacts", "",
        f"Evaluated on the run's test split ({meta['test_split']['samples']} samples), each artifact loaded back "
        f"from its file. Latency: median of {lat['repeats']} CPU forward passes after {lat['warmup']} warm-up, "
        f"{lat['threads']} threads, {lat['cpu']}, torch {exp['torch']}.", "",
        artifact_table(meta), "",
    ]
    if int8:
        lines += [f"int8: {int8['scheme']}, {int8['engine']} engine, calibrated on {int8['calibration_samples']} "
                  f"samples of the {int8['calibration_pool']} pool; test accuracy change vs fp32: "
                  f"{100 * int8['acc_change']:+.2f} points.", ""]
    lines += [
        "## Loading", "",
        "```python",
        "import torch",
        "model = torch.jit.load(\"model.ts\")                 # or \"model_int8.ts\"; needs only torch",
        "model = torch.export.load(\"model.pt2\").module()   # torch.export program",
        f"logits = model(pixels)                             # pixels: float32 N×{shape.split('×', 1)[1]} in [0, 1]",
        "```", "",
        "## Limitations", "",
        "- Accuracy is measured on a held-out split of the training distribution; images from elsewhere "
        "(other scanners, resolutions, classes) are out of scope until checked.",
        "- Latency depends on the CPU and thread count above; measure on the target machine.",
    ]
    return "\n".join(lines) + "\n"


def _floats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def arguments(args: dict) -> str:
    """A config node's arguments as " (k=v, ...)", or "" when it has none."""
    return " (" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")" if args else ""
