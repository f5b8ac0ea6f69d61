"""Which images a split holds, named so that a person can find them: the file path, or `part[index]`.

A data module's split is a `Subset` (or a `ConcatSubset`) of a source part
(train, val, test, unlabeled). Image files are named by their path; images held
in memory (digits, CIFAR, ...) by the part and index, e.g. `train[17]`.
"""

from __future__ import annotations

import numpy as np

from ssl_train.data.datamodule import ConcatSubset, SSLDataModule
from ssl_train.data.datasets import FileImages

PARTS = ("train", "val", "test", "unlabeled")


def locate(datamodule: SSLDataModule, subset) -> list[tuple[str, object, np.ndarray]]:
    """[(part name, image source, indices into it)] that make up `subset`, in order."""
    names = {id(getattr(datamodule.source, p)): p for p in PARTS if getattr(datamodule.source, p) is not None}
    pieces = subset.parts if isinstance(subset, ConcatSubset) else [subset]
    return [(names.get(id(piece.source), "?"), piece.source, np.asarray(piece.indices)) for piece in pieces]


def sample_id(part: str, source, index: int) -> str:
    return str(source.paths[index]) if isinstance(source, FileImages) else f"{part}[{index}]"


def sample_ids(datamodule: SSLDataModule, subset) -> list[str]:
    """One id per sample of `subset`, in its order."""
    return [sample_id(part, source, int(i)) for part, source, idx in locate(datamodule, subset) for i in idx]
