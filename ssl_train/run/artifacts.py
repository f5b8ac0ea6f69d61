"""Any model file → a predictor: an ssl-train checkpoint or an exported model (model.ts, model.pt2).

A checkpoint knows its run: config (hence the exact data splits), classes and
training logs beside it. An exported model knows only pixels → logits; the data
must be named (`data=...`), and the export's metadata.json, when it sits beside
the file, supplies class names and the training seed to check against.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ssl_train.errors import SSLTrainError, first_line
from ssl_train.io import sha256_file
from ssl_train.run.checkpoint import LoadedRun, load_run
from ssl_train.run.safety import Trust, UntrustedFileError

EXPORTED = {".ts": "TorchScript", ".pt2": "torch.export program"}


@contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Hide the deprecation notices of torch.jit and torch.ao.quantization inside this block only."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category, message=r"(?s).*deprecat")
        yield


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    with quiet_deprecations():
        return torch.jit.load(str(path), map_location="cpu")


def load_program(path: str | Path) -> nn.Module:
    """The runnable module of a saved torch.export program."""
    return torch.export.load(str(path)).module()


@dataclass
class LoadedModel:
    """A model file's predictor (float pixels in [0, 1], N×C×H×W → logits) and what is known about it."""

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


def load_model(path: str | Path, trust: Trust | None = None) -> LoadedModel:
    """Load a checkpoint (any suffix but .ts/.pt2) or an exported model; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise SSLTrainError(f"ckpt_path={path}: no such file")
    kind = EXPORTED.get(path.suffix)
    if kind is None:
        run = load_run(path, trust=trust)
        network = run.network.eval()
        return LoadedModel(path, "checkpoint", run.sha256, network, run=run)
    if path.suffix == ".pt2" and not (trust and trust.everything):
        # torch.export.load unpickles the program's weights and constants (weights_only=False): a shared .pt2
        # can run code on load, unlike a checkpoint or TorchScript's restricted unpickler.
        raise UntrustedFileError(f"{path}: a torch.export program unpickles on load and could run code; evaluate "
                                 "model.ts instead, or pass trust_checkpoint=true for a file you made")
    try:
        module = load_torchscript(path) if path.suffix == ".ts" else load_program(path)
    except Exception as exc:  # TorchScript and torch.export raise many types for foreign files
        raise SSLTrainError(f"{path} is not a loadable {kind} file ({first_line(exc)})") from None
    metadata = None
    meta_path = path.parent / "metadata.json"
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            metadata = None
    return LoadedModel(path, kind, sha256_file(path), module, metadata=metadata)


def output_classes(model: LoadedModel, sample: Tensor, shape: tuple[int, ...], data_name: str) -> int:
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
