"""Training progress: a bar on a terminal, a line every N steps or seconds anywhere else.

A bar redraws at every step; in a Slurm output file, a pipe or a CI log each redraw is kept (a 2,000-step run
wrote ~590 KB of them), so a non-interactive run logs one line per `every_n_steps` steps or `every_s` seconds,
whichever comes first, plus one per validation.
"""

from __future__ import annotations

import logging
import sys
import time

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from ssl_train.errors import SSLTrainError

log = logging.getLogger(__name__)

STYLES = ("auto", "bar", "lines")


def progress_callback(style: str = "auto", every_n_steps: int = 100, every_s: float = 60.0) -> ProgressBar:
    """`auto`: the bar when stderr is a terminal, lines otherwise."""
    if style not in STYLES:
        raise SSLTrainError(f"progress.style={style!r}: expected one of {', '.join(STYLES)}")
    if every_n_steps < 1 or every_s <= 0:
        raise SSLTrainError(f"progress.every_n_steps={every_n_steps}, progress.every_s={every_s}: "
                            "expected a positive step count and a positive number of seconds")
    interactive = style == "bar" or (style == "auto" and sys.stderr.isatty())
    return TQDMProgressBar() if interactive else ProgressLines(every_n_steps, every_s)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def progress_line(step: int, total: int, loss: float | None, steps_per_s: float) -> str:
    """`step 400/2000 (20%)  loss 0.5321  12.3 steps/s  left 2m10s`."""
    parts = [f"step {step}/{total} ({100 * step / total:.0f}%)"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if steps_per_s > 0:
        parts += [f"{steps_per_s:.1f} steps/s", f"left {format_duration((total - step) / steps_per_s)}"]
    return "  ".join(parts)


class ProgressLines(ProgressBar):
    """Log lines instead of a bar (rank 0 only: Lightning disables progress bars on the other ranks)."""

    def __init__(self, every_n_steps: int = 100, every_s: float = 60.0):
        super().__init__()
        self.every_n_steps, self.every_s = every_n_steps, every_s
        self._enabled = True
        self._start: tuple[float, int] | None = None
        self._last: tuple[float, int] = (0.0, 0)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.monotonic()
        self._start = self._last = (now, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        step, now = trainer.global_step, time.monotonic()
        last_time, last_step = self._last
        due = step - last_step >= self.every_n_steps or now - last_time >= self.every_s or step >= trainer.max_steps
        if not (self._enabled and due and step > last_step):
            return
        start_time, start_step = self._start or (now, step)
        rate = (step - start_step) / (now - start_time) if now > start_time else 0.0
        loss = trainer.progress_bar_metrics.get("loss")
        log.info(progress_line(step, trainer.max_steps, None if loss is None else float(loss), rate))
        self._last = (now, step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        log.info(f"step {trainer.global_step} validation  " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
