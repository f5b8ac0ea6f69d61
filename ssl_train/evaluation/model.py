"""The model under evaluation: an ssl-train checkpoint or an exported model (model.ts, model.pt2).

A checkpoint knows its run: config (hence the exact data splits), classes and
training logs beside it. An exported model knows only pixels → logits; the data
must be named (`data=...`), and the export's metadata.json, when it sits beside
the file, supplies class names and the training seed to check against.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ssl_train.errors import SSLTrainError
from ssl_train.export.artifact import sha256_file
from ssl_train.export.checkpoint import LoadedRun, load_run

EXPORTED = {".ts": "TorchScript", ".pt2": "torch.export program"}


@dataclass
class EvalModel:
    path: Path
    kind: str                       # "checkpoint", "TorchScript" or "torch.export program"
    sha256: str
    predict: Callable[[Tensor], Tensor]
    run: LoadedRun | None = None    # for checkpoints
    metadata: dict | None = None    # an export's metadata.json, when found beside the file

    @property
    def classes(self) -> list[str] | None:
        if self.run is not None:
            return self.run.classes
        return (self.metadata or {}).get("classes")

    @property
    def run_dir(self) -> Path | None:
        """The training run directory (RUN/checkpoints/x.ckpt → RUN), for the training logs."""
        return self.path.resolve().parent.parent if self.run is not None else None

    @property
    def training_seed(self) -> int | None:
        if self.run is not None:
            return self.run.config.get("seed")
        return ((self.metadata or {}).get("training") or {}).get("seed")


def load_model(path: str | Path) -> EvalModel:
    """Load a checkpoint (any suffix but .ts/.pt2) or an exported model; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise SSLTrainError(f"ckpt_path={path}: no such file")
    kind = EXPORTED.get(path.suffix)
    if kind is None:
        run = load_run(path)
        network = run.network.eval()
        return EvalModel(path, "checkpoint", run.sha256, network, run=run)
    from ssl_train.export.pt2 import load_program
    from ssl_train.export.torchscript import load_torchscript

    try:
        module = load_torchscript(path) if path.suffix == ".ts" else load_program(path)
    except Exception as exc:  # TorchScript and torch.export raise many types for foreign files
        text = str(exc).strip().splitlines()
        reason = text[0] if text else type(exc).__name__
        raise SSLTrainError(f"{path} is not a loadable {kind} file ({reason})") from None
    metadata = None
    meta_path = path.parent / "metadata.json"
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            metadata = None
    return EvalModel(path, kind, sha256_file(path), module, metadata=metadata)


def output_classes(model: EvalModel, sample: Tensor, shape: tuple[int, ...], data_name: str) -> int:
    """The number of logits the model returns for `sample`; a model that rejects the data's images is an error."""
    try:
        with torch.inference_mode():
            logits = model.predict(sample)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise SSLTrainError(f"{model.path} cannot take the images of {data_name} (shape {'×'.join(map(str, shape))}): "
                            f"{text[0] if text else type(exc).__name__}") from None
    if logits.ndim != 2 or logits.shape[0] != len(sample):
        raise SSLTrainError(f"{model.path} returns shape {tuple(logits.shape)} for {len(sample)} images: "
                            "expected N×classes logits")
    return int(logits.shape[1])
