"""What a run's loggers get once it is over (final metrics, hyperparameters, artifacts)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig


def finish_tracking(trainer: L.Trainer, cfg: DictConfig, metrics: dict, run_dir: Path) -> None:
    """Called once after metrics.json is written."""
