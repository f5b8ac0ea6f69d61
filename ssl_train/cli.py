"""What every command shares: one-line errors, the results table, the swept value, the data option.

The commands (`train.py`, `*_cli.py`) are thin `@hydra.main` functions over the tools; this module is
their plumbing, so no command imports another.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_train.errors import SSLTrainError, first_line
from ssl_train.run import guard
from ssl_train.run.data import dataset_name

REPORTED = ("test/acc", "test/f1_macro", "test/ece", "test/outlier_auroc", "val/acc_best", "train/time_s")


def run_cli(task: Callable[[DictConfig], object], cfg: DictConfig):
    """Run an entry point's task; user errors become one line on stderr and exit status 1.

    The working directory joins the import path (last, so it shadows no installed package), as it would for
    `python -m`: a user's own `model._target_=mymodule.MyNet` is found beside where the command runs.
    """
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return task(cfg)
    except InstantiationException as exc:  # a `_target_` refused its config values: say why, not where
        message = instantiation_message(exc)
    except (SSLTrainError, OmegaConfBaseException, FileNotFoundError) as exc:
        message = first_line(exc)
    print(f"error: {message}", file=sys.stderr)
    if _in_multirun():
        # One job of a sweep: fail this job only (Hydra records it; the Optuna sweeper marks the trial failed
        # and goes on) instead of ending the whole sweep.
        raise JobFailed(message) from None
    sys.exit(1)


class JobFailed(SSLTrainError):
    """A job of a Hydra multirun stopped on a user error (already reported in one line)."""


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def instantiation_message(exc: InstantiationException) -> str:
    """One line for a constructor that refused its config: our own message as is; anything else (torch's own
    checks, a TypeError for an unknown option) names the config node and its target, then the cause."""
    if isinstance(exc.__cause__, SSLTrainError):
        return first_line(exc.__cause__)
    text = str(exc)
    key = re.search(r"^full_key: (\S+)", text, re.MULTILINE)
    head = text.strip().splitlines()[0] if text.strip() else ""
    target = re.search(r"'([A-Za-z_][\w.]*)'", head) or re.search(r"partial\(([\w.]+), \.\.\.\)", head)
    where = " ".join(part for part in (key and key.group(1), target and f"({target.group(1)})") if part)
    if "Error locating target" in text:
        reason = "no such class or function (_target_ must be an importable dotted path)"
    else:
        reason = first_line(exc.__cause__ if exc.__cause__ is not None else exc)
    return f"{where or 'instantiate'}: {reason}"


def results_table(cfg: DictConfig, metrics: dict) -> str:
    title = (f"{cfg.algorithm._target_.rsplit('.', 1)[-1]} on {cfg.data.dataset._target_.rsplit('.', 1)[-1]}, "
             f"{metrics.get('data/labeled', cfg.data.num_labels)} labeled images, seed {cfg.seed}, "
             f"{metrics.get('train/steps')} steps")
    rows = [(k, f"{metrics[k]:.4f}" if k != "train/time_s" else f"{metrics[k]:.1f}") for k in REPORTED if k in metrics]
    if "guard/gain" in metrics:
        low, high = 100 * metrics["guard/gain_low"], 100 * metrics["guard/gain_high"]
        rows.append(("guard/gain", f"{100 * metrics['guard/gain']:+.1f} points [{low:+.1f}, {high:+.1f}] over "
                                   f"supervised ({metrics['guard/val_acc_supervised']:.4f} val acc)"))
    rows.append(("run dir", str(cfg.paths.output_dir)))
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)] + [f"{k:<{width}}  {v}" for k, v in rows]
    if metrics.get("guard/ssl_better") == 0.0:
        lines.append(guard.verdict(metrics))
    return "\n".join(lines)


def optimized_value(cfg: DictConfig, metrics: dict) -> float:
    """What a Hydra sweeper optimizes: `cfg.optimized_metric` of the run. A missing or non-finite value fails the
    run (a sweeper records a failed trial) rather than handing the sweeper a NaN."""
    name = cfg.optimized_metric
    value = metrics.get(name)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        known = ", ".join(sorted(k for k, v in metrics.items() if isinstance(v, (int, float))))
        found = "is absent" if value is None else f"is {value!r}"
        raise SSLTrainError(f"optimized_metric={name} {found} in this run's metrics (it has: {known})")
    return float(value)


def data_config(cfg: DictConfig) -> dict | None:
    """A command's chosen data config (resolved), `data.root` moved to `data.dataset.root`; None when no data
    was chosen."""
    data = cfg.get("data")
    if data is None or "_target_" not in data:
        return None
    data = OmegaConf.to_container(data, resolve=True)
    root = data.pop("root", None)
    if root is not None:
        if "root" not in data.get("dataset", {}):
            raise SSLTrainError(f"data.root={root}: the {dataset_name(data)} dataset reads no folder "
                                "(data=image_folder does)")
        data["dataset"]["root"] = root
    return data
