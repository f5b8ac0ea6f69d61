"""The trial side of a sweep: a Lightning callback that reports the validation curve to the trial's Optuna study
and stops a trial that the pruner gives up on (the sweeper then records it as PRUNED).

The sweeper adds it to each trial's config (`callbacks.optuna_trial`, with the storage, study and trial number),
so a trial run by any launcher, in any process, reports to the same study.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import optuna

from ssl_train.errors import SSLTrainError

log = logging.getLogger(__name__)

PRUNED_AT = "pruned_at_step"  # the trial's user attribute: the training step at which the pruner stopped it


def rdb_storage(url: str, busy_timeout_s: float) -> optuna.storages.RDBStorage:
    """Optuna's SQL storage; for SQLite with a busy timeout, so that processes sharing the file wait for its lock
    instead of failing with "database is locked"."""
    engine = {"connect_args": {"timeout": busy_timeout_s}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)


class OptunaTrialReport(L.Callback):
    """Reports `monitor` at each validation (step = the global step) to trial `trial` of `study_name`, and sets
    `trainer.should_stop` when the median pruner (`pruner`: its arguments; None: never prune) says so.

    Only global rank 0 talks to the storage; its decision is broadcast, so every DDP rank stops together.
    """

    def __init__(self, storage: str, study_name: str, trial: int, monitor: str = "val/acc",
                 pruner: dict[str, Any] | None = None, busy_timeout_s: float = 60.0):
        self.storage, self.study_name, self.number, self.monitor = storage, study_name, int(trial), monitor
        self.pruner = dict(pruner) if pruner else None
        self.busy_timeout_s = busy_timeout_s
        self._trial: optuna.trial.Trial | None = None
        self._reported: set[int] = set()
        self._warned = False

    def trial(self) -> optuna.trial.Trial:
        if self._trial is None:
            storage = rdb_storage(self.storage, self.busy_timeout_s)
            pruner = optuna.pruners.MedianPruner(**self.pruner) if self.pruner else optuna.pruners.NopPruner()
            try:
                study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner)
                trial_id = storage.get_trial_id_from_study_id_trial_number(
                    storage.get_study_id_from_name(self.study_name), self.number)
            except KeyError:
                raise SSLTrainError(f"callbacks.optuna_trial: no trial {self.number} of study {self.study_name!r} in "
                                    f"{self.storage}") from None
            state = storage.get_trial(trial_id).state
            if state != optuna.trial.TrialState.RUNNING:
                raise SSLTrainError(f"callbacks.optuna_trial: trial {self.number} of study {self.study_name!r} is "
                                    f"{state.name}, not running (only the sweeper starts trials)")
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step, prune = trainer.global_step, False
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.is_global_zero and value is not None and step not in self._reported:
            trial = self.trial()
            trial.report(float(value), step)
            self._reported.add(step)
            prune = trial.should_prune()
            if prune:
                trial.set_user_attr(PRUNED_AT, step)
                log.info(f"trial {self.number}: pruned at step {step} ({self.monitor}={float(value):.4f})")
        elif trainer.is_global_zero and value is None and not self._warned:
            self._warned = True
            log.warning(f"callbacks.optuna_trial.monitor={self.monitor!r} is not logged: this trial is not pruned")
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
