"""A run checkpoint back to the network it evaluated and the data module it was trained on.

`ssl-train` stores the resolved run config, class names, input shape and
channel statistics in `checkpoint["ssl_train"]`, so a checkpoint alone rebuilds
`Classifier(backbone, mean, std)` with no config files around. The weights are
the EMA copy (`ema.module.*`) when the run evaluated it (`algorithm.eval_ema`),
else the raw network (`net.*`): exactly the model behind the run's test metrics.

Checkpoints are read with `torch.load(weights_only=True)`, and the configs inside
are instantiated only when every `_target_` is ssl_train's own or trusted by the
user (`ssl_train.run.safety`): a file from elsewhere cannot run code, and anything
that is not an ssl-train checkpoint fails with an error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.errors import SSLTrainError, first_line
from ssl_train.io import sha256_file
from ssl_train.models.classifier import Classifier
from ssl_train.models.timm_backbone import rebuild_config
from ssl_train.run import guard
from ssl_train.run.data import build_datamodule
from ssl_train.run.safety import Trust, check_config

EXTRAS = ("config", "classes", "input_shape", "mean", "std")  # what ssl-train stores in checkpoint["ssl_train"]


@dataclass
class LoadedRun:
    """A checkpoint's evaluated network (CPU, eval mode) and what is needed to rebuild its data."""

    path: Path
    sha256: str
    network: Classifier
    config: dict
    classes: list[str]
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    weights: str  # "ema" or "net"
    global_step: int
    trust: Trust | None = None
    guard: dict[str, float] | None = None  # the training run's guard/* numbers (run/guard.py), when it had them

    def datamodule(self) -> SSLDataModule:
        """The run's data module, set up: the same splits (same seed), hence the same test set."""
        return build_datamodule(self.config["data"], source=self.path, trust=self.trust)


def load_run(path: str | Path, option: str = "ckpt_path", trust: Trust | None = None) -> LoadedRun:
    """Load an `ssl-train` checkpoint; a missing file, a non-checkpoint, a mismatching model or a config naming
    code that is not trusted is an SSLTrainError.

    `option` is the config key the path came from, for the missing-file message.
    """
    path = Path(path)
    if not path.is_file():
        raise SSLTrainError(f"{option}={path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and EOF errors all mean "not a checkpoint"
        raise SSLTrainError(f"{path} is not a checkpoint: torch.load failed ({first_line(exc)})") from None
    extras = checkpoint.get("ssl_train") if isinstance(checkpoint, dict) else None
    if not isinstance(extras, dict) or "state_dict" not in checkpoint:
        raise SSLTrainError(f"{path} is not an ssl-train checkpoint (no 'ssl_train' entry with the run config)")
    missing = [k for k in EXTRAS if k not in extras] + [f"config.{k}" for k in ("model", "data", "algorithm")
                                                        if k not in extras.get("config", {})]
    if missing:
        raise SSLTrainError(f"{path}: its 'ssl_train' entry lacks {', '.join(missing)}")

    config = extras["config"]
    # Refused before anything is built (build_network checks the model config): nothing runs, nothing is written.
    check_config(config["data"], path, trust, where="data")
    input_shape = tuple(extras["input_shape"])
    algorithm = config["algorithm"]
    weights = "ema" if algorithm.get("eval_ema") and algorithm.get("ema_decay") else "net"
    prefix = "ema.module." if weights == "ema" else "net."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise SSLTrainError(f"{path}: no '{prefix}*' weights in the checkpoint's state_dict")
    network = build_network(config["model"], extras["classes"], input_shape, extras["mean"], extras["std"], state,
                            path, trust)
    return LoadedRun(path=path, sha256=sha256_file(path), network=network.eval(), config=config,
                     classes=list(extras["classes"]), input_shape=input_shape, mean=list(extras["mean"]),
                     std=list(extras["std"]), weights=weights, global_step=int(checkpoint.get("global_step", -1)),
                     trust=trust, guard=guard.read(extras.get("guard"), path))


def build_network(model: dict, classes: list[str], input_shape: tuple[int, int, int], mean: list[float],
                  std: list[float], state: dict, source: str | Path, trust: Trust | None = None) -> Classifier:
    """`Classifier(backbone, mean, std)` from a model config read from `source` (a file, named in errors) and
    its weights; the config's targets are checked first.

    Shared by checkpoints and by files that carry a network of their own (the monitor's reference profile).
    """
    check_config(model, source, trust, where="model")
    model = rebuild_config(model)  # the weights are the file's: nothing downloaded, no model.checkpoint read
    target = model.get("_target_", "?")
    try:
        backbone = instantiate(model, input_shape=tuple(input_shape), num_classes=len(classes))
    except InstantiationException as exc:
        reason = exc.__cause__ if isinstance(exc.__cause__, SSLTrainError) else exc
        raise SSLTrainError(f"{source}: cannot build its model {target} ({first_line(reason)})") from None
    except (HydraException, ValueError, TypeError) as exc:
        raise SSLTrainError(f"{source}: cannot build its model {target} ({first_line(exc)})") from None
    network = Classifier(backbone, mean, std)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), first_line(exc))
        raise SSLTrainError(f"{source}: its weights do not fit the configured model {target} "
                            f"({detail[:300]})") from None
    return network.eval()

