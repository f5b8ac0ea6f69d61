"""The sweep: an Optuna study in SQLite that survives a kill, its trials launched in batches through Hydra's
configured launcher, pruned from their validation curves.

Why its own sweeper: the stable hydra-optuna-sweeper (1.3) pins optuna<3, whose SQLite storage fails under
SQLAlchemy 2, and its 1.4 pre-release needs hydra-core 1.4, still a release candidate. This one is written against
the current Optuna (>= 4.5) and Hydra 1.3 and parses the search space with Hydra's own override parser, as the
official plugin does.

- The study lives in the sweep directory (`optuna.db`) and is loaded when it exists: rerunning the same command
  continues it. A trial left RUNNING by a killed sweep is marked FAIL and its parameters are asked again; `n_trials`
  counts finished (complete or pruned) trials, so none is counted twice.
- A study remembers the command that started it (fixed overrides and search space) and refuses another one.
- Trial k is sampled by TPE seeded with `seed + k`, k its position among the study's trials (interrupted ones left
  out): a resumed sweep asks what the uninterrupted one would have asked.
- Job directories are named by trial number (`<sweep dir>/<number>`).
- A trial whose job raises, exits with an error or returns no finite value is FAILED with one log line; the sweep
  goes on until `max_failures` trials failed.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, configure_log
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from ssl_train.cli import run_cli
from ssl_train.errors import SSLTrainError, first_line
from ssl_train.io import write_text_atomic
from ssl_train.sweep.pruning import PRUNED_AT, rdb_storage
from ssl_train.sweep.space import SearchSpace, direction, overrides, parse_space
from ssl_train.sweep.summary import FINISHED, lines, summarize

log = logging.getLogger(__name__)

CALLBACK = "ssl_train.sweep.pruning.OptunaTrialReport"


def hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar (strings quoted)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def consecutive(numbers: list[int]) -> list[slice]:
    """Slices of runs of consecutive trial numbers (each run is launched with its first number as job index)."""
    runs, start = [], 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            runs.append(slice(start, i))
            start = i
    return runs


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


class OptunaSweep:
    """What `hydra/sweeper=ssl_optuna` does; the options are those of SSLOptunaSweeperConf (hydra_plugins/)."""

    def __init__(self, *, direction: str, study_name: str, storage: str | None, n_trials: int, n_jobs: int,
                 max_failures: int | None, busy_timeout_s: float, sampler: Any, pruner: Any, params: Any):
        self.direction, self.study_name, self.storage_option = direction, study_name, storage
        self.n_trials, self.n_jobs, self.busy_timeout_s = n_trials, n_jobs, busy_timeout_s
        self.max_failures = n_trials if max_failures is None else max_failures
        self.sampler_options, self.pruner_options = plain(sampler) or {}, plain(pruner)
        self.params = plain(params) or {}

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.metric = str(config.get("optimized_metric", "value"))
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> dict:
        return run_cli(lambda _: self._sweep(arguments), self.config)

    # ---------------------------------------------------------------- the sweep

    def _sweep(self, arguments: list[str]) -> dict:
        direction(self.direction)
        for name in ("n_trials", "n_jobs", "max_failures"):
            if getattr(self, name) < 1:
                raise SSLTrainError(f"hydra.sweeper.{name}={getattr(self, name)}: expected a positive integer")
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep logs its own line per trial
        space = parse_space(self.params, arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        self.storage = self._storage_url(sweep_dir)
        self._check_composes(space)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        study = self._open_study(space)
        self._recover(study)
        log.info(f"study {self.study_name} in {self.storage}: {self._finished(study)} of {self.n_trials} trials "
                 f"finished; searching {', '.join(space.distributions) or 'nothing'}")
        failures, last_error = 0, ""
        while (finished := self._finished(study)) < self.n_trials:
            if failures >= self.max_failures:  # the summary of the last batch is written
                raise SSLTrainError(f"{failures} trials failed (the last: {last_error}); the sweep stops at "
                                    f"hydra.sweeper.max_failures={self.max_failures}")
            errors = self._run_batch(study, space, min(self.n_jobs, self.n_trials - finished))
            failures, last_error = failures + len(errors), (errors or [last_error])[-1]
            if self._finished(study) < self.n_trials:  # a killed sweep leaves the summary of what it finished
                summarize(study, sweep_dir, space.fixed, self.metric, self.storage)
        summary = summarize(study, sweep_dir, space.fixed, self.metric, self.storage)
        print("\n".join(lines(summary, sweep_dir)))
        return summary

    def _storage_url(self, sweep_dir: Path) -> str:
        """The study's SQLAlchemy URL with an absolute SQLite path: trials may run in other directories."""
        url = self.storage_option or f"sqlite:///{sweep_dir / 'optuna.db'}"
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = f"sqlite:///{Path(url.removeprefix('sqlite:///')).resolve()}"
        return url

    def _finished(self, study: optuna.Study) -> int:
        return len(study.get_trials(deepcopy=False, states=FINISHED))

    def _check_composes(self, space: SearchSpace) -> None:
        """Compose a trial's config at the ends of the space (and every choice) before anything runs, so that a
        misspelt key is one line now rather than a failed trial per job."""
        for sample in space.samples():
            try:
                self.hydra_context.config_loader.load_sweep_config(self.config, self._job(space, sample, 0))
            except Exception as exc:  # Hydra's composition errors come in several types; all mean the same here
                cause = f" ({first_line(exc.__cause__)})" if exc.__cause__ is not None else ""
                raise SSLTrainError(f"a trial's config does not compose from hydra.sweeper.params and the command "
                                    f"line: {first_line(exc)}{cause}") from None

    def _open_study(self, space: SearchSpace) -> optuna.Study:
        study = optuna.create_study(study_name=self.study_name, storage=rdb_storage(self.storage, self.busy_timeout_s),
                                    direction=self.direction, load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise SSLTrainError(f"hydra.sweeper.direction={self.direction}, but study {self.study_name!r} in "
                                f"{self.storage} was made to {study.direction.name.lower()}: give this sweep its own "
                                f"hydra.sweep.dir (or hydra.sweeper.study_name)")
        record, started = space.record(), study.user_attrs.get("command")
        if started is None:
            study.set_user_attr("command", record)
        elif started != record:
            changed = sorted(set(started["overrides"]) ^ set(record["overrides"])) + sorted(
                k for k in set(started["space"]) | set(record["space"])
                if started["space"].get(k) != record["space"].get(k))
            raise SSLTrainError(f"study {self.study_name!r} in {self.storage} was started by another command (it "
                                f"differs in {', '.join(changed)}): rerun that command to continue it, or give this "
                                f"one its own hydra.sweep.dir")
        return study

    def _recover(self, study: optuna.Study) -> None:
        """Trials left RUNNING by a killed sweep: marked FAIL, remembered as interrupted, their parameters asked
        again (the retry gets the next trial number)."""
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not stale:
            return
        interrupted = study.user_attrs.get("interrupted", [])
        study.set_user_attr("interrupted", sorted({*interrupted, *(t.number for t in stale)}))
        for trial in stale:
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            log.warning(f"trial {trial.number} was left running by an interrupted sweep: marked failed, "
                        f"its parameters are asked again")

    def _sampler(self, study: optuna.Study) -> optuna.samplers.TPESampler:
        position = len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL, TrialState.RUNNING)))
        position -= len(study.user_attrs.get("interrupted", []))
        return optuna.samplers.TPESampler(seed=self.sampler_options.get("seed", 0) + position, **{
            k: v for k, v in self.sampler_options.items() if k != "seed"})

    def _job(self, space: SearchSpace, params: dict, number: int) -> list[str]:
        """A trial's overrides: the fixed ones, its parameters, and the callback that reports to its trial."""
        pruner = dict(self.pruner_options or {})
        report = {"_target_": CALLBACK, "storage": self.storage, "study_name": self.study_name, "trial": number,
                  "monitor": pruner.pop("monitor", "val/acc"), "pruner": pruner or None,
                  "busy_timeout_s": self.busy_timeout_s}
        return [*space.fixed, *overrides(params), f"++callbacks.optuna_trial={hydra_value(report)}"]

    def _run_batch(self, study: optuna.Study, space: SearchSpace, size: int) -> list[str]:
        """Ask `size` trials, run them through the launcher, tell their results; returns the failures' messages."""
        trials = []
        for _ in range(size):
            study.sampler = self._sampler(study)
            trials.append(study.ask(space.distributions))
        returns: list[JobReturn | Exception] = []
        for run in consecutive([t.number for t in trials]):
            jobs = [self._job(space, t.params, t.number) for t in trials[run]]
            try:
                returns += self.launcher.launch(jobs, initial_job_idx=trials[run][0].number)
            except Exception as exc:  # the launcher itself failed (e.g. a cluster job died): these trials failed
                returns += [exc] * len(jobs)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)  # jobs reconfigure logging
        return [error for t, r in zip(trials, returns) if (error := self._tell(study, t, r))]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, result: JobReturn | Exception) -> str:
        """Record a trial's outcome; returns its error message when it failed, else ''."""
        metric = self.metric
        try:
            if isinstance(result, Exception):
                raise result
            value = result.return_value  # raises what the job raised
            value = float("nan") if value is None else float(value)
            error = "" if math.isfinite(value) else (
                f"it returned {metric} = {value} (a run that never validated has none: let trainer.val_check_interval "
                f"divide trainer.max_steps)")
        except Exception as exc:
            # ssl-train's user errors (JobFailed in a multirun) are already one line
            value, error = None, first_line(exc) if isinstance(exc, SSLTrainError) else (
                f"{type(exc).__name__}: {first_line(exc)}")
        (frozen,) = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                     if t.number == trial.number]
        params = f"({time.time() - frozen.datetime_start.timestamp():.1f} s) [{' '.join(overrides(trial.params))}]"
        if error:
            trial.set_user_attr("error", error)
            study.tell(trial, state=TrialState.FAIL)
            log.warning(f"trial {trial.number} failed: {error} {params}")
        elif PRUNED_AT in frozen.user_attrs:
            study.tell(trial, state=TrialState.PRUNED)
            log.info(f"trial {trial.number}: pruned at step {frozen.user_attrs[PRUNED_AT]}, {metric} {value:.4f} "
                     f"{params}")
        else:
            study.tell(trial, value)
            log.info(f"trial {trial.number}: {metric} {value:.4f} {params}")
        return error
