"""Class mixes as real data has them: classes nobody labeled (open set) and long-tailed class counts.

These are data options (`data.open_set`, `data.imbalance`, `data.label_draw`), usable with every dataset, so that
a measured scenario is one command line. The counts are pure functions of the class counts; the draws that use
them are in `splits`.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ssl_train.errors import SSLTrainError

# The label of an image whose class is known but was left out of the labeled classes (`data.open_set`); -1 stays
# "label unknown" (an unlabeled-only split). Metrics count neither; outlier detection is scored on UNSEEN.
UNSEEN = -2
LABEL_DRAWS = ("balanced", "proportional")


def _number(key: str, value, low: float) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not low <= value < float("inf"):
        raise SSLTrainError(f"{key}={value!r}: expected a number >= {low:g}")
    return float(value)


@dataclass(frozen=True)
class Imbalance:
    """Long-tailed class counts: class c (in class order) gets a share ∝ ratio^(−c/(K−1)), so the first class has
    `ratio` times the last one's. `labeled` shapes the labeled draw, `unlabeled` the unlabeled pool (1: every class
    cut to the same count, a uniform pool); `reverse_unlabeled` puts the pool's head at the last class (a pool
    whose mix is the labeled set's reversed). None leaves that side as the data has it."""

    labeled: float | None = None
    unlabeled: float | None = None
    reverse_unlabeled: bool = False

    @classmethod
    def from_config(cls, config) -> Imbalance | None:
        if config is None:
            return None
        if isinstance(config, Imbalance):
            return config
        if not hasattr(config, "keys") or set(config) - {"labeled", "unlabeled", "reverse_unlabeled"}:
            raise SSLTrainError(f"data.imbalance={config!r}: expected null or {{labeled: RATIO, unlabeled: RATIO, "
                                f"reverse_unlabeled: false}} (ratios >= 1, null: as the data has it)")
        lab, unl = config.get("labeled"), config.get("unlabeled")
        reverse = config.get("reverse_unlabeled", False)
        if not isinstance(reverse, bool):
            raise SSLTrainError(f"data.imbalance.reverse_unlabeled={reverse!r}: expected true or false")
        return cls(None if lab is None else _number("data.imbalance.labeled", lab, 1),
                   None if unl is None else _number("data.imbalance.unlabeled", unl, 1), reverse)

    def to_config(self) -> dict:
        return {"labeled": self.labeled, "unlabeled": self.unlabeled, "reverse_unlabeled": self.reverse_unlabeled}


def long_tail_profile(num_classes: int, ratio: float, reverse: bool = False) -> np.ndarray:
    """Each class's share relative to the head class: ratio^(−rank/(K−1)), rank 0 the head."""
    rank = np.arange(num_classes)[::-1] if reverse else np.arange(num_classes)
    return ratio ** (-rank / max(num_classes - 1, 1))


def allocate(total: int, shares: np.ndarray, what: str) -> np.ndarray:
    """`total` split into whole counts proportional to `shares` (largest remainders), at least one per class."""
    k = len(shares)
    if total < k:
        raise SSLTrainError(f"{what}: {total} cannot give each of the {k} classes a sample")
    exact = total * np.asarray(shares, dtype=float) / np.sum(shares)
    counts = np.maximum(np.floor(exact).astype(int), 1)
    while counts.sum() < total:
        counts[np.argmax(exact - counts)] += 1
    while counts.sum() > total:  # the classes raised to one took it from the others
        counts[np.argmax(np.where(counts > 1, counts - exact, -np.inf))] -= 1
    return counts


def pool_counts(available: np.ndarray, ratio: float, reverse: bool) -> np.ndarray:
    """How many of each class a long-tailed pool keeps: the largest pool of that profile the counts allow."""
    profile = long_tail_profile(len(available), ratio, reverse)
    head = np.min(available / profile)
    return np.floor(head * profile + 1e-9).astype(int)


def seen_classes(classes: Sequence[str], open_set) -> list[int]:
    """`data.open_set` (the labeled classes, by name or index) as sorted class indices."""
    if not isinstance(open_set, Sequence) or isinstance(open_set, str) or not open_set:
        raise SSLTrainError(f"data.open_set={open_set!r}: expected null or a list of the labeled classes "
                            f"(names or indices of {list(classes)[:10]})")
    ids = []
    for c in open_set:
        if isinstance(c, str) and c in classes:
            ids.append(list(classes).index(c))
        elif isinstance(c, numbers.Integral) and not isinstance(c, bool) and str(c) in classes:
            ids.append(list(classes).index(str(c)))
        elif isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= c < len(classes):
            ids.append(int(c))
        else:
            raise SSLTrainError(f"data.open_set: {c!r} is not a class of the dataset (names or indices of "
                                f"{list(classes)[:10]})")
    ids = sorted(set(ids))
    if len(ids) < 2 or len(ids) == len(classes):
        raise SSLTrainError(f"data.open_set={list(open_set)!r}: expected at least 2 and fewer than all "
                            f"{len(classes)} classes (the others are the unseen ones)")
    return ids


def relabel(images, seen: list[int]):
    """A shallow copy of an image source whose labels are renumbered over the `seen` classes, the others UNSEEN
    (an unknown label, -1, stays -1). The pixels are shared."""
    mapping = np.full(max(int(images.labels.max(initial=0)), max(seen)) + 1, UNSEEN, dtype=np.int64)
    mapping[seen] = np.arange(len(seen))
    out = copy.copy(images)
    out.labels = np.where(images.labels >= 0, mapping[np.clip(images.labels, 0, None)], images.labels)
    return out
