"""The search space: Hydra sweep strings (`interval(0.8, 0.97)`, `tag(log, interval(0.003, 0.1))`, `choice(...)`,
`range(...)`) parsed by Hydra's own override parser into Optuna distributions, and trial parameters back into
override strings."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from ssl_train.errors import SSLTrainError, first_line

SWEEPS = "interval(a, b), tag(log, interval(a, b)), choice(a, b, ...) or range(start, stop[, step])"


@dataclass
class SearchSpace:
    """What every trial gets: `distributions` sampled by Optuna, `fixed` override lines passed as they are."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def record(self) -> dict:
        """A comparable description (stored with the study, to tell a rerun of the same command from another)."""
        return {"overrides": sorted(self.fixed),
                "space": {k: distribution_to_json(d) for k, d in sorted(self.distributions.items())}}

    def samples(self) -> list[dict[str, Any]]:
        """A few parameter sets that together use every choice of every categorical parameter and both ends of
        each numeric range: composing them checks the space against the config before any trial runs."""
        choices = [len(d.choices) for d in self.distributions.values() if isinstance(d, CategoricalDistribution)]
        return [{k: d.choices[i % len(d.choices)] if isinstance(d, CategoricalDistribution) else
                 (d.low if i % 2 == 0 else d.high) for k, d in self.distributions.items()}
                for i in range(max([2, *choices]))]


def parse_space(params: dict[str, Any], arguments: list[str]) -> SearchSpace:
    """`hydra.sweeper.params`, then the command line's own overrides: a sweep there joins the space, a plain value
    there fixes a parameter of the configured space."""
    lines = [(f"{key}={'null' if value is None else value}", f"hydra.sweeper.params.{key}={value!r}")
             for key, value in params.items()]
    lines += [(line, f"{line!r} on the command line") for line in arguments]
    space = SearchSpace()
    for line, shown in lines:
        override = parse_override(line, shown)
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed = [fixed for fixed in space.fixed if fixed.split("=", 1)[0] != key]
        if override.is_sweep_override():
            space.distributions[key] = distribution(override, shown)
        else:
            space.fixed.append(line)
    return space


def parse_override(line: str, shown: str) -> Override:
    try:
        (override,) = OverridesParser.create().parse_overrides([line])
    except HydraException as exc:
        raise SSLTrainError(f"{shown}: not a Hydra override or sweep ({SWEEPS}): "
                            f"{first_line(exc.__cause__ or exc)}") from None
    return override


def distribution(override: Override, shown: str) -> BaseDistribution:
    """The Optuna distribution of one sweep override; one line naming it when it has none."""
    value = override.value()
    try:
        if isinstance(value, IntervalSweep):
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=log)
            return FloatDistribution(float(value.start), float(value.end), log=log)
        if isinstance(value, RangeSweep) and not value.shuffle and all(
                isinstance(v, int) for v in (value.start, value.stop, value.step)) and value.step > 0:
            # Hydra's range stops before `stop`, as Python's: range(1, 5) is 1..4
            last = value.start + (math.ceil((value.stop - value.start) / value.step) - 1) * value.step
            return IntDistribution(value.start, last, step=value.step)
        if isinstance(value, (ChoiceSweep, RangeSweep)):
            choices = list(override.sweep_iterator(transformer=Transformer.encode))
            if not choices:
                raise ValueError("no values to choose from")
            bad = [c for c in choices if not isinstance(c, (str, int, float, bool, type(None)))]
            if bad:
                raise ValueError(f"a choice must be a plain value, not {bad[0]!r}")
            return CategoricalDistribution(choices)
    except (ValueError, TypeError) as exc:
        raise SSLTrainError(f"{shown}: {first_line(exc)}") from None
    raise SSLTrainError(f"{shown}: not a sweep the Optuna sweeper can sample (expected {SWEEPS})")


def overrides(params: dict[str, Any]) -> list[str]:
    """Trial parameters as override lines (floats in full, so that a pasted line reproduces the trial; choices are
    already in Hydra's encoding)."""
    def text(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return "null" if value is None else str(value).lower()
        return repr(value) if isinstance(value, float) else str(value)

    return [f"{key}={text(value)}" for key, value in params.items()]


def command(fixed: list[str], params: dict[str, Any]) -> str:
    """The ssl-train command line that reruns a trial: the sweep's fixed overrides, then the trial's parameters."""
    return " ".join(["ssl-train", *(shlex.quote(line) for line in [*fixed, *overrides(params)])])


def direction(value: str) -> str:
    if value not in ("maximize", "minimize"):
        raise SSLTrainError(f"hydra.sweeper.direction={value!r}: expected maximize or minimize")
    return value
