"""One checkpoint in, verified deployable artifacts out: the flow behind `ssl-export` and `ssl-distill`.

    checkpoint → Classifier (EMA weights when the run evaluated them) + the run's data module
      model.ts       frozen fp32 TorchScript           parity with eager ≤ parity_atol
      model_int8.ts  int8, calibrated on unlabeled data, frozen TorchScript
      model.pt2      torch.export, dynamic batch       parity with eager ≤ parity_atol
      model.onnx     optional extra                    onnx.checker + onnxruntime parity ≤ onnx_atol
    each artifact, loaded back from its file → test metrics, size, CPU latency
    reference_profile.pt/.json: the evaluated model on the validation split, for `ssl-monitor`
      → metadata.json, MODEL_CARD.md (written last: a directory without them is not a finished export)

Preprocessing needs no export of its own: `Classifier` normalizes inside the
network, so every artifact takes pixels in [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ssl_train.calibration import fold_temperature
from ssl_train.data.datamodule import SSLDataModule
from ssl_train.errors import SSLTrainError
from ssl_train.export import card, measure
from ssl_train.export.pt2 import export_onnx, export_program, onnx_metadata, onnx_predictor, require_onnx
from ssl_train.export.quantize import quantize_int8
from ssl_train.export.torchscript import export_torchscript
from ssl_train.io import sha256_file, write_json_atomic, write_text_atomic
from ssl_train.run.artifacts import load_program, load_torchscript
from ssl_train.run.batches import batch_of, float_batches
from ssl_train.run.checkpoint import load_run
from ssl_train.run.profile import PROFILE_FILE, ProfileOptions, profile_run, save_profile
from ssl_train.run.safety import Trust
from ssl_train.run.tracking import log_export

log = logging.getLogger(__name__)


@dataclass
class ExportOptions:
    """What to write and how to measure it (conf/export/default.yaml).

    Args:
        torchscript, int8, pt2, onnx: which artifacts to write (ONNX needs the `onnx` extra).
        calibration_samples: unlabeled images (seeded sample) that calibrate the int8 activations.
        parity_atol: max absolute logit difference allowed between an fp32 artifact and the eager model.
        onnx_atol: the same for ONNX run by onnxruntime, whose kernels round differently from torch's.
        latency_batch_sizes, latency_repeats, latency_warmup: the latency columns (median of repeats).
        latency_threads: intra-op threads while timing; None keeps this machine's setting.
        eval_batch_size: batch size for the test-split metrics.
        reference_profile: write reference_profile.pt/.json (the drift monitor's reference) beside the model.
        seed: picks the calibration sample.
        temperature: divide the logits by this calibration temperature (ssl-eval fits it), folded into the
            network's last layer so that every artifact carries it; None leaves the logits as trained.
    """

    torchscript: bool = True
    int8: bool = True
    pt2: bool = True
    onnx: bool = False
    calibration_samples: int = 512
    parity_atol: float = 1e-5
    onnx_atol: float = 1e-4
    latency_batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    latency_repeats: int = 30
    latency_warmup: int = 5
    latency_threads: int | None = None
    eval_batch_size: int = 256
    reference_profile: bool = True
    seed: int = 0
    temperature: float | None = None


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, options: ExportOptions | None = None,
                      trust: Trust | None = None) -> dict:
    """Write the chosen artifacts of `ckpt_path` plus metadata.json and MODEL_CARD.md into `out_dir`.

    Returns the metadata. Any failure raises before the metadata is written, and
    no artifact ever appears under its final name unverified. `trust` says which code the checkpoint's
    configs may name beyond ssl_train's own (`ssl_train.run.safety`).
    """
    options = options or ExportOptions()
    if options.onnx:
        require_onnx()  # fail before any work, not after the other artifacts
    run = load_run(ckpt_path, trust=trust)
    if options.temperature is not None:
        if not options.temperature > 0:
            raise SSLTrainError(f"export.temperature={options.temperature}: expected a positive number")
        run.network = fold_temperature(run.network, options.temperature)
    out_dir = Path(out_dir)
    datamodule = run.datamodule()
    test = list(float_batches(datamodule.test.known(), datamodule.source.scale, options.eval_batch_size))
    # Real test images: a latency batch, and parity inputs of two sizes (any batch size must work).
    sample = test[0][0][: max([*options.latency_batch_sizes, 2])]
    written, int8_info = _write_artifacts(run.network, datamodule, out_dir, [sample[:1], batch_of(sample, 7)],
                                          options)

    with measure.threads(options.latency_threads) as thread_count:
        reference = _measure(run.network, test, len(run.classes), sample, options)
        artifacts = {}
        for name, (info, load) in written.items():
            path = out_dir / name
            artifacts[name] = {"file": name, "size_bytes": path.stat().st_size, "sha256": sha256_file(path),
                               **info, **_measure(load(path), test, len(run.classes), sample, options)}
    if int8_info is not None:
        int8_info["acc_change"] = artifacts["model_int8.ts"]["acc"] - reference["acc"]
        if int8_info["acc_change"] < -0.01:
            log.warning("int8 test accuracy is %.2f points below fp32", -100 * int8_info["acc_change"])

    if options.reference_profile:
        source = {"checkpoint": str(run.path.resolve()), "sha256": run.sha256, "global_step": run.global_step,
                  "weights": run.weights}
        save_profile(profile_run(run.network, datamodule, run.config, run.classes, run.input_shape, run.mean,
                                 run.std, source, ProfileOptions(seed=options.seed)), out_dir)

    scale = datamodule.source.scale
    meta = {
        "format_version": 1,
        "source_checkpoint": {"path": str(run.path), "sha256": run.sha256, "global_step": run.global_step,
                              "weights": "EMA" if run.weights == "ema" else "raw (no EMA)"},
        "classes": run.classes,
        "input": {"shape": ["N", *run.input_shape], "dtype": "float32", "layout": "NCHW", "value_range": [0.0, 1.0],
                  "raw_scale": scale, "scaling": card.scaling_note(scale),
                  "normalization": {"mean": run.mean, "std": run.std, "inside_model": True}},
        "output": {"kind": "logits", "shape": ["N", len(run.classes)]},
        "model": {"num_parameters": measure.num_parameters(run.network)},
        "training": card.training_summary(run.config, run.global_step, len(datamodule.labeled)),
        "test_split": {"samples": sum(len(y) for _, y in test)},
        "export": {"torch": torch.__version__, "int8": int8_info, "parity_atol": options.parity_atol,
                   "temperature": options.temperature,
                   "latency": {"batch_sizes": list(options.latency_batch_sizes), "repeats": options.latency_repeats,
                               "warmup": options.latency_warmup, "threads": thread_count,
                               "cpu": measure.cpu_name()}},
        "reference": reference,
        "artifacts": artifacts,
        "reference_profile": PROFILE_FILE if options.reference_profile else None,
    }
    write_json_atomic(out_dir / "metadata.json", meta)
    write_text_atomic(out_dir / "MODEL_CARD.md", card.render_card(meta))
    log_export(run.path, out_dir, meta, trust)  # the MLflow run of the checkpoint, when it has one
    return meta


Loader = Callable[[Path], Callable[[Tensor], Tensor]]


def _write_artifacts(model: nn.Module, datamodule: SSLDataModule, out_dir: Path, parity_inputs: list[Tensor],
                     options: ExportOptions) -> tuple[dict[str, tuple[dict, Loader]], dict | None]:
    """Each chosen artifact, written and verified: {file name: (export info, loader)}, and the int8 scheme."""
    written: dict[str, tuple[dict, Loader]] = {}
    int8_info = None
    if options.torchscript:
        info = export_torchscript(model, out_dir / "model.ts", parity_inputs, options.parity_atol)
        written["model.ts"] = info, load_torchscript
    if options.int8:
        pool_name, pool = (("unlabeled", datamodule.unlabeled) if len(datamodule.unlabeled)
                           else ("labeled", datamodule.labeled))
        calibration = (x for x, _ in float_batches(pool, datamodule.source.scale, options.eval_batch_size,
                                                           limit=options.calibration_samples, seed=options.seed))
        quantized, int8_info = quantize_int8(model, calibration, parity_inputs[-1])
        int8_info["calibration_pool"] = pool_name
        # The file must reproduce the in-memory int8 model (not the fp32 one: quantization moves the logits).
        info = export_torchscript(quantized, out_dir / "model_int8.ts", parity_inputs, options.parity_atol,
                                  reference=quantized)
        written["model_int8.ts"] = info, load_torchscript
    if options.pt2:
        info = export_program(model, out_dir / "model.pt2", parity_inputs, options.parity_atol)
        written["model.pt2"] = info, load_program
    if options.onnx:
        metadata = onnx_metadata(datamodule.source.classes, datamodule.input_shape, datamodule.source.scale,
                                 model.mean.flatten().tolist(), model.std.flatten().tolist(), options.temperature)
        info = export_onnx(model, out_dir / "model.onnx", parity_inputs, options.onnx_atol, metadata)
        written["model.onnx"] = info, onnx_predictor
    return written, int8_info


def _measure(predict: Callable[[Tensor], Tensor], test: list[tuple[Tensor, Tensor]], num_classes: int,
             sample: Tensor, options: ExportOptions) -> dict:
    """Test metrics and the latency columns of one model."""
    metrics = measure.evaluate(predict, test, num_classes)
    metrics["latency_ms"] = {
        str(b): measure.latency_ms(predict, batch_of(sample, b), options.latency_repeats,
                                   options.latency_warmup)
        for b in options.latency_batch_sizes}
    return metrics

