"""`hydra/sweeper=ssl_optuna`: ssl_train's Hydra sweeper over the current Optuna (the logic is in ssl_train.sweep).

Hydra finds its plugins in the `hydra_plugins` namespace and imports every one of them when any Hydra app starts,
so this module holds only the structured config and a thin class; Optuna is imported when a sweep is made.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper


@dataclass
class SamplerConf:
    """Optuna's TPE sampler. Each trial is sampled with seed + its position in the study, so a sweep resumed
    after a kill asks what the uninterrupted one would have asked."""

    seed: int = 0
    n_startup_trials: int = 10  # random trials before TPE models the results (Optuna's default)
    multivariate: bool = False


@dataclass
class PrunerConf:
    """Optuna's median pruner over the validation curve that each trial reports (`monitor`, at each validation):
    a trial whose value at a step is below the median of the earlier trials' values at that step is stopped."""

    monitor: str = "val/acc"
    n_startup_trials: int = 5  # finished trials before any pruning
    n_warmup_steps: int = 0  # training steps of a trial before it can be pruned
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SSLOptunaSweeperConf:
    _target_: str = "hydra_plugins.ssl_train_sweeper.SSLOptunaSweeper"
    direction: str = "maximize"  # of the value the task returns (`optimized_metric`, default val/acc_best)
    study_name: str = "ssl_train"
    storage: str | None = None  # an SQLAlchemy URL; null: sqlite:///<hydra.sweep.dir>/optuna.db
    n_trials: int = 20  # finished (complete or pruned) trials the study should hold
    n_jobs: int = 1  # trials launched together (in parallel with a parallel launcher, e.g. submitit_local)
    max_failures: int | None = None  # failed trials after which a sweep stops; null: n_trials
    busy_timeout_s: float = 60.0  # how long a writer waits for SQLite's lock (parallel trials share the file)
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf | None = field(default_factory=PrunerConf)  # null: no pruning
    # The search space: key -> Hydra sweep, e.g. interval(0.8, 0.97), tag(log, interval(0.003, 0.1)),
    # choice(cnn, mlp), range(1, 5); a plain value is passed to every trial.
    params: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="ssl_optuna", node=SSLOptunaSweeperConf,
                             provider="ssl_train")


class SSLOptunaSweeper(Sweeper):
    """An Optuna study in SQLite, resumable, pruned from the validation curve: see ssl_train.sweep.sweeper."""

    def __init__(self, **options: Any) -> None:
        from ssl_train.sweep.sweeper import OptunaSweep

        self.impl = OptunaSweep(**options)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.impl.sweep(arguments)
