"""Refusals of model constructor values as one-line `SSLTrainError`s naming the config key (`model.*`).

The backbones are usable outside Hydra, so they cannot know where their values came from; the keys named are
those of the shipped configs: `model.<argument>` for the model's own options, and the data for
`input_shape` and `num_classes` (which `ssl-train` passes from the data module).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

from ssl_train.errors import SSLTrainError


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def shown(value):
    """A config value as the user wrote it: a list (or ListConfig) as a plain list."""
    return list(value) if isinstance(value, Iterable) and not isinstance(value, (str, bytes)) else value


def int_list(key: str, value, length: int | None = None, example: str = "") -> list[int]:
    """`value` as a list of positive integers (exactly `length` of them when given), else an error naming `key`."""
    items = shown(value)
    if not isinstance(items, list) or not all(is_int(v) and v >= 1 for v in items) \
            or (length is not None and len(items) != length):
        count = f"{length} " if length is not None else "a list of "
        raise SSLTrainError(f"{key}={items!r}: expected {count}positive integers{example}")
    return [int(v) for v in items]


def check_dropout(key: str, value) -> None:
    if not is_number(value) or not 0.0 <= value < 1.0:
        raise SSLTrainError(f"{key}={value!r}: expected a dropout probability in [0, 1)")


def check_data(model: str, input_shape, num_classes) -> tuple[int, int, int]:
    """The (channels, height, width) and class count the data gives a backbone."""
    shape = shown(input_shape)
    if not isinstance(shape, list) or len(shape) != 3 or not all(is_int(v) and v >= 1 for v in shape):
        raise SSLTrainError(f"{model}: input_shape={shape!r} (from the data): expected 3 positive integers "
                            f"(channels, height, width)")
    if not is_int(num_classes) or num_classes < 1:
        raise SSLTrainError(f"{model}: num_classes={num_classes!r} (from the data): expected a positive integer")
    return tuple(int(v) for v in shape)
