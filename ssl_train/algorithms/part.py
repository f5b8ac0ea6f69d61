"""The swappable pieces of an algorithm (masking, distribution alignment): small modules chosen by `_target_`.

A part keeps its state as buffers, so a checkpoint holds it and a resumed run
continues it exactly. State sized by the data (one entry per unlabeled sample)
is sized in `bind`, which the algorithm calls from `setup`: Lightning runs it
before it restores a checkpoint, so the restored buffers fit. Under DDP a part
updates its state from the whole global batch (`distributed.gather_all`), so
every rank holds the same state.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ssl_train.errors import SSLTrainError


class Part(nn.Module):
    """Base of the parts. `options` are the constructor's keyword arguments, kept for `to_config` (a checkpoint of
    a hand-built module names its parts as configs, as one composed from conf/ does)."""

    def __init__(self, **options):
        super().__init__()
        self.options = options

    def bind(self, datamodule) -> None:
        """Size and initialize state from the data (the labeled set, the unlabeled pool); nothing by default."""

    def observe_validation(self, probs: Tensor, labels: Tensor) -> None:
        """A validation batch's class probabilities and labels (a part that estimates from held-out labels, such
        as the pool-target alignment, keeps them); nothing by default."""

    def end_validation(self) -> None:
        """The validation pass is over: update what was estimated from it; nothing by default."""

    def to_config(self) -> dict:
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", "_partial_": True, **self.options}


def build_part(spec: Part | Callable[..., Part] | None, num_classes: int, key: str) -> Part | None:
    """A part from what a config or a caller gives: a part, a factory taking `num_classes` (a Hydra `_partial_`
    config), or None (no such part)."""
    if spec is None or isinstance(spec, Part):
        return spec
    if not callable(spec):
        raise SSLTrainError(f"algorithm.{key}: expected a part config with _target_ and _partial_: true "
                            f"(see conf/algorithm/{key}/), got {spec!r}")
    part = spec(num_classes=num_classes)
    if not isinstance(part, Part):
        raise SSLTrainError(f"algorithm.{key}: {type(part).__name__} is not an ssl_train.algorithms.part.Part")
    return part


def check_fraction(key: str, value, *, low_open: bool = False, high: float = 1.0) -> float:
    """A config number in [0, high] ((0, high] with `low_open`), else one line naming it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0 < value if low_open else 0 <= value)
    if not ok or value > high:
        bounds = f"{'(' if low_open else '['}0, {high:g}]"
        raise SSLTrainError(f"{key}={value!r}: expected a number in {bounds}")
    return float(value)
