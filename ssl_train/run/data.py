"""A data config → a set-up data module: one route for training, evaluation, audits and loaded runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.errors import SSLTrainError, first_line
from ssl_train.run.safety import Trust, check_config


def dataset_name(config: dict) -> str:
    """The dataset's short name (`digits`, `image_folder`, ...) for titles and messages."""
    return str((config.get("dataset") or {}).get("_target_", "?")).rsplit(".", 1)[-1]


def build_datamodule(config: DictConfig | dict, source: str | Path | None = None, trust: Trust | None = None,
                     setup: Callable[[SSLDataModule], None] | None = SSLDataModule.setup) -> SSLDataModule:
    """Instantiate and set up a data config.

    `source` names the file the config was read from: its targets are then checked first
    (`ssl_train.run.safety`). A config from the user's own command line is not.
    """
    if source is not None:  # before resolving: an interpolation in a file is refused, not evaluated
        check_config(config, source, trust, where="data")
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    try:
        datamodule: SSLDataModule = instantiate(config)
    except HydraException as exc:
        if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, SSLTrainError):
            raise exc.__cause__ from None  # the constructor's own one-line refusal
        raise SSLTrainError(f"{source or 'data'}: cannot build the {dataset_name(config)} data module "
                            f"({first_line(exc)})") from None
    if setup is not None:
        setup(datamodule)
    return datamodule
