"""Seeded, stratified index splits: labeled subset per class, unlabeled pool, val and test."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from ssl_train.data.scenarios import LABEL_DRAWS, Imbalance, allocate, long_tail_profile, pool_counts
from ssl_train.errors import SSLTrainError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    """Indices into the training pool (labeled, unlabeled) and, when carved from it, val and test."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray | None = None
    test: np.ndarray | None = None


def carve(indices: np.ndarray, labels: np.ndarray, size: float | int, seed: int, *, key: str = "size",
          classes: Sequence[str] | None = None, own_split: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (rest, held) with `held` stratified by label; `size` is a fraction or a count.

    A class with a single sample cannot be split: it stays whole in `rest` (the training side) and the held
    split has none of it, which a warning says, naming the class, its count and `own_split` (how to give the
    held split images of its own). `key` names the config value `size` came from in errors (make_splits:
    data.val_size, data.test_size); `classes` names the class ids.
    """
    if size <= 0:
        return indices, indices[:0]
    name = (lambda c: repr(classes[c]) if c >= 0 else "(unseen)") if classes is not None else (lambda c: f"{c}")
    ids, counts = np.unique(labels[indices], return_counts=True)
    single = ids[counts < 2]
    splittable = indices[~np.isin(labels[indices], single)]
    fix = f" ({own_split})" if own_split else ""
    if single.size and not splittable.size:
        raise SSLTrainError(f"{key}={size!r}: no class has two samples to carve a split from (each class of the "
                            f"{len(indices)} samples has one){fix}")
    if single.size:
        listed = ", ".join(f"class {name(c)} has 1 sample" for c in single[:5]) + (", ..." if single.size > 5 else "")
        log.warning(f"{key}={size!r}: {listed}: kept in training, so the carved split has none of "
                    f"{'it' if single.size == 1 else 'them'}{fix}")
    try:
        rest, held = train_test_split(splittable, test_size=size, random_state=seed,
                                      stratify=labels[splittable])
    except ValueError as exc:
        raise SSLTrainError(f"{key}={size!r}: cannot carve a split of that size from {len(splittable)} samples: "
                            f"{' '.join(str(exc).split())}{fix}") from None
    return np.sort(np.concatenate([rest, np.setdiff1d(indices, splittable)])), np.sort(held)


def labeled_counts(class_sizes: np.ndarray, num_labels: int, draw: str = "balanced",
                   ratio: float | None = None) -> np.ndarray:
    """How many labels each class gets: the same number (`balanced`), by the pool's own class frequencies
    (`proportional`), or long-tailed with head/tail `ratio` (`data.imbalance.labeled`)."""
    k = len(class_sizes)
    if ratio is not None:
        return allocate(num_labels, long_tail_profile(k, ratio), f"data.num_labels={num_labels}")
    if draw == "proportional":
        return allocate(num_labels, class_sizes, f"data.num_labels={num_labels} (data.label_draw=proportional)")
    if num_labels <= 0 or num_labels % k:
        raise SSLTrainError(
            f"num_labels={num_labels} must be a positive multiple of the class count {k} "
            f"(labels are drawn per class, balanced; data.label_draw=proportional draws by the class frequencies)")
    return np.full(k, num_labels // k)


def sample_labeled(labels: np.ndarray, pool: np.ndarray, num_labels: int, num_classes: int, seed: int,
                   draw: str = "balanced", ratio: float | None = None) -> np.ndarray:
    """Draw `num_labels` indices of the classes 0..num_classes-1 from `pool`, seeded, per class as
    `labeled_counts` says."""
    if draw not in LABEL_DRAWS:
        raise SSLTrainError(f"data.label_draw={draw!r}: expected one of {list(LABEL_DRAWS)}")
    members = [pool[labels[pool] == c] for c in range(num_classes)]
    counts = labeled_counts(np.array([len(m) for m in members]), num_labels, draw, ratio)
    rng = np.random.default_rng(seed)
    chosen = []
    for c, (m, n) in enumerate(zip(members, counts)):
        if len(m) < n:
            raise SSLTrainError(
                f"num_labels={num_labels} needs {n} labeled samples of class {c}, "
                f"but the training pool holds only {len(m)}")
        chosen.append(rng.choice(m, size=n, replace=False))
    return np.sort(np.concatenate(chosen))


def long_tail_pool(labels: np.ndarray, pool: np.ndarray, num_classes: int, ratio: float, reverse: bool,
                   seed: int) -> np.ndarray:
    """A seeded subset of `pool` whose classes 0..num_classes-1 follow the long tail `ratio` (the largest such
    subset); samples of other labels (unseen classes, unknown labels) all stay."""
    members = [pool[labels[pool] == c] for c in range(num_classes)]
    counts = pool_counts(np.array([len(m) for m in members]), ratio, reverse)
    rng = np.random.default_rng(seed)
    kept = [rng.choice(m, size=n, replace=False) for m, n in zip(members, counts)]
    return np.sort(np.concatenate(kept + [pool[(labels[pool] < 0) | (labels[pool] >= num_classes)]]))


def make_splits(labels: np.ndarray, num_classes: int, num_labels: int | None, seed: int, *,
                val_size: float | int = 0.0, test_size: float | int = 0.0,
                include_labeled_in_unlabeled: bool = False, classes: Sequence[str] | None = None,
                own_split: dict[str, str] | None = None, label_draw: str = "balanced",
                imbalance: Imbalance | None = None) -> Splits:
    """Carve test then val from the pool (when asked), then draw the labeled subset from what is left.

    Val and test are disjoint from the labeled and unlabeled sets, and all four are fixed by `seed`.
    `num_labels=None` labels the whole remaining pool (a user's own folder of labeled images). `own_split`
    ("val", "test" → text) says in warnings and errors how the dataset could hold that split itself.
    `label_draw` and `imbalance` set the class mix of the labeled draw and of the unlabeled pool (`scenarios`).
    """
    hint = own_split or {}
    imbalance = imbalance or Imbalance()
    if imbalance.labeled is not None and label_draw != "balanced":
        raise SSLTrainError(f"data.imbalance.labeled={imbalance.labeled:g} and data.label_draw={label_draw}: "
                            f"both set the labeled class mix; choose one")
    pool = np.arange(len(labels))
    pool, test = (carve(pool, labels, test_size, seed, key="data.test_size", classes=classes,
                        own_split=hint.get("test", "")) if test_size else (pool, None))
    pool, val = (carve(pool, labels, val_size, seed + 1, key="data.val_size", classes=classes,
                       own_split=hint.get("val", "")) if val_size else (pool, None))
    known = pool[labels[pool] >= 0]
    labeled = known if num_labels is None else sample_labeled(labels, pool, num_labels, num_classes, seed + 2,
                                                              label_draw, imbalance.labeled)
    unlabeled = pool if include_labeled_in_unlabeled else np.setdiff1d(pool, labeled)
    if imbalance.unlabeled is not None:
        unlabeled = long_tail_pool(labels, unlabeled, num_classes, imbalance.unlabeled, imbalance.reverse_unlabeled,
                                   seed + 3)
    return Splits(labeled=labeled, unlabeled=unlabeled, val=val, test=test)


def index_stream(n: int, start: int, count: int, seed: tuple[int, ...]) -> np.ndarray:
    """Positions [start, start+count) of an endless sequence of seeded permutations of range(n).

    Each pass k over the data is the permutation seeded by (*seed, k), so any
    window of the stream is computable on its own: a batch depends only on the
    seed and the step, which makes resuming exact and worker count irrelevant.
    """
    first, last = start // n, (start + count - 1) // n
    passes = [_permutation(n, tuple(seed), k) for k in range(first, last + 1)]
    offset = start - first * n
    return np.concatenate(passes)[offset:offset + count]


@functools.lru_cache(maxsize=16)
def _permutation(n: int, seed: tuple[int, ...], k: int) -> np.ndarray:
    """Pass k of a stream, kept for the next batches: consecutive steps read the same pass, and permuting a large
    pool at every step would cost more than gathering the batch."""
    order = np.random.default_rng([*seed, k]).permutation(n)
    order.flags.writeable = False
    return order
