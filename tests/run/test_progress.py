"""Progress: a bar on a terminal, log lines elsewhere (a Slurm output file keeps every bar redraw)."""

from __future__ import annotations

import logging

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from ssl_train.errors import SSLTrainError
from ssl_train.run.progress import ProgressLines, format_duration, progress_callback, progress_line
from ssl_train.run.training import train


def test_a_line_says_step_loss_speed_and_time_left():
    assert progress_line(400, 2000, 0.53214, 12.5) == "step 400/2000 (20%)  loss 0.5321  12.5 steps/s  left 2m08s"
    assert progress_line(1, 10, None, 0.0) == "step 1/10 (10%)"
    assert format_duration(3 * 3600 + 125) == "3h02m"


def test_the_bar_is_for_terminals_only():
    assert isinstance(progress_callback("bar"), TQDMProgressBar)
    assert isinstance(progress_callback("lines"), ProgressLines)
    assert isinstance(progress_callback("auto"), ProgressLines)  # pytest's stderr is not a terminal
    with pytest.raises(SSLTrainError, match="progress.style='fancy': expected one of auto, bar, lines"):
        progress_callback("fancy")
    with pytest.raises(SSLTrainError, match="progress.every_n_steps=0"):
        progress_callback("lines", every_n_steps=0)


def test_a_non_interactive_run_logs_a_line_every_n_steps_and_each_validation(make_cfg, caplog):
    cfg = make_cfg("trainer.enable_progress_bar=true", "progress.style=lines", "progress.every_n_steps=2",
                   "progress.every_s=3600", "trainer.max_steps=5", "trainer.val_check_interval=4")
    with caplog.at_level(logging.INFO, logger="ssl_train.run.progress"):
        train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "ssl_train.run.progress"]
    steps = [line.split()[1] for line in lines if "/5 " in line]
    assert steps == ["2/5", "4/5", "5/5"], lines
    assert all(" loss " in line and "steps/s" in line and " left " in line for line in lines if "/5 " in line)
    assert [line.split()[1] for line in lines if "validation" in line] == ["4", "5"]
