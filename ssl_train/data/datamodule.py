"""One LightningDataModule for every dataset: paired labeled/unlabeled training batches, plain val/test batches.

A training batch is a pure function of (seed, step): the loader yields step
numbers, the dataset turns a step into the indices of B labeled and μ·B
unlabeled samples (`splits.index_stream`), and augmentation runs batched with
a generator seeded by the same step. Resuming from a checkpoint therefore
continues with exactly the batches an uninterrupted run would have seen,
whatever the worker count.

Where augmentation runs is an option (`augment_on`): on the device (default)
the loader only moves uint8 tensors and the GPU builds the views; in the
loader the same batched code runs on the CPU in the workers. Both draw the
same operations from the same per-step seed, so on a CPU they give identical
batches.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import numbers
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler

from ssl_train.data.augment import StrongAugment, WeakAugment
from ssl_train.data.datasets import FileImages, SourceData, TensorImages
from ssl_train.data.scenarios import LABEL_DRAWS, UNSEEN, Imbalance, relabel, seen_classes
from ssl_train.data.splits import Splits, carve, index_stream, make_splits
from ssl_train.errors import SSLTrainError, first_line

log = logging.getLogger(__name__)
# How a dataset holds a split of its own (no carve from the labeled images), for errors and warnings.
OWN_SPLIT = {"val": "ROOT/val/<class>/ for data=image_folder, rows with split 'val' for data=npz",
             "test": "ROOT/test/<class>/ for data=image_folder, rows with split 'test' for data=npz"}
USES = {"val": "validation (the best checkpoint, the temperature, the drift reference)",
        "test": "the reported test metrics"}


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_split_size(key: str, value) -> None:
    """A held-out split's size: a fraction in [0, 1) or a whole count >= 0 (0: none carved)."""
    ok = _is_int(value) and value >= 0 or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                           and 0.0 <= value < 1.0)
    if not ok:
        raise SSLTrainError(f"{key}={value!r}: expected a fraction in [0, 1) or a whole number of samples >= 0")


def _check_dataset(dataset) -> None:
    """`data.dataset` must be a source still to be called (`_partial_: true`) whose options fit its signature."""
    if not callable(dataset):
        raise SSLTrainError(f"data.dataset: expected a dataset source function (a _target_ with _partial_: true), "
                            f"got a {type(dataset).__name__}")
    if isinstance(dataset, functools.partial):
        try:
            signature = inspect.signature(dataset.func)
        except (TypeError, ValueError):  # a builtin without a signature: nothing to check
            return
        try:
            signature.bind(*dataset.args, **dataset.keywords)
        except TypeError as exc:
            name = getattr(dataset.func, "__qualname__", repr(dataset.func))
            raise SSLTrainError(f"data.dataset: {name}: {first_line(exc)}") from None


class Subset:
    """The samples `indices` of an image source, fetched a batch of indices at a time."""

    def __init__(self, source: TensorImages | FileImages, indices: np.ndarray | None = None):
        self.source = source
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    def __getitem__(self, positions) -> dict[str, Tensor]:
        idx = self.indices[np.asarray(positions)]
        return {"x": self.source.load(idx), "y": torch.as_tensor(self.source.labels[idx])}

    def where(self, keep: np.ndarray) -> Subset:
        """The samples whose `keep` entry is true."""
        return Subset(self.source, self.indices[np.asarray(keep, dtype=bool)])

    def known(self) -> Subset:
        """The samples of the labeled classes (without data.open_set's unseen ones and unknown labels): what
        accuracy is measured on."""
        return self.where(self.labels >= 0)

    def carve(self, size: float | int, seed: int, *, key: str) -> tuple[Subset, Subset]:
        """(rest, held): `held` a stratified, seeded carve of `size` samples (`splits.carve`), `rest` the others."""
        rest, held = carve(np.arange(len(self)), self.labels, size, seed, key=key)
        return Subset(self.source, self.indices[rest]), Subset(self.source, self.indices[held])


class PairedSteps:
    """Maps a step number to {"lb": B labeled samples, "ulb": μ·B unlabeled samples}.

    With several processes (DDP) each rank takes its own slice of the global
    stream, so ranks never see the same sample in a step.
    """

    def __init__(self, labeled: Subset, unlabeled: Subset | None, batch_size: int, unlabeled_batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1, transform: Callable[[dict], dict] | None = None):
        self.labeled, self.unlabeled = labeled, unlabeled
        self.batch_size, self.unlabeled_batch_size = batch_size, unlabeled_batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.transform = transform

    def __getitem__(self, step: int) -> dict[str, Any]:
        slot = step * self.world_size + self.rank
        batch = {"step": torch.tensor(step), "lb": self._samples(self.labeled, slot, self.batch_size, 0)}
        if self.unlabeled is not None and self.unlabeled_batch_size:
            batch["ulb"] = self._samples(self.unlabeled, slot, self.unlabeled_batch_size, 1)
        return self.transform(batch) if self.transform is not None else batch

    def _samples(self, split, slot: int, count: int, stream: int) -> dict[str, Tensor]:
        """`count` samples of the split's stream with their positions in the split (`idx`: per-sample state such
        as FlexMatch's is indexed by them)."""
        positions = index_stream(len(split), slot * count, count, (self.seed, stream))
        return split[positions] | {"idx": torch.as_tensor(positions)}


class StepSampler(Sampler[int]):
    """Endless step numbers from `start` (the trainer's global step when the loader is built)."""

    def __init__(self, start: int = 0):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while True:
            yield step
            step += 1


def callable_config(fn: Callable) -> dict:
    """A function (or a `functools.partial` of one) as a Hydra `_partial_` config."""
    args, keywords = (), {}
    if isinstance(fn, functools.partial):
        fn, args, keywords = fn.func, fn.args, fn.keywords
    config = {"_target_": f"{fn.__module__}.{fn.__qualname__}", "_partial_": True,
              **{k: list(v) if isinstance(v, tuple) else v for k, v in keywords.items()}}
    return config | ({"_args_": list(args)} if args else {})


class SSLDataModule(L.LightningDataModule):
    """Splits a dataset source into labeled/unlabeled/val/test and serves SSL training batches.

    `views` names the unlabeled views the algorithm asks for ("weak", "strong",
    "weak2", ...): names starting with "weak" get an independent weak
    augmentation, names starting with "strong" a strong one. Training reads them
    from the algorithm the trainer fits (its `unlabeled_views`), so nothing needs
    setting by hand; set `views` only to draw batches without a trainer. `augment_on` is
    "device" (after the transfer, batched on the GPU when there is one) or
    "loader" (on the CPU, in the loader's workers). `val_from` is where the validation split comes from
    when the dataset has none: "train" (carved from the training pool) or "test" (a stratified, seeded
    carve of `val_size` from the test split, which keeps the rest), so that no training image is held
    out, as in the FixMatch and USB protocols.

    Scenarios (`ssl_train.data.scenarios`): `open_set` names the labeled classes; images of the others stay in
    the unlabeled pool and the test split as UNSEEN (the model knows only the labeled classes; the test split
    scores outlier detection on them) and leave the validation split. `label_draw` ("balanced" or
    "proportional") and `imbalance` set the class mix of the labeled draw and of the unlabeled pool.
    """

    def __init__(self, dataset: Callable[[], SourceData], num_labels: int = 40, batch_size: int = 64, mu: int = 7,
                 eval_batch_size: int = 512, val_size: float | int = 0.1, test_size: float | int = 0.25,
                 include_labeled_in_unlabeled: bool = False, seed: int = 0, num_workers: int = 0,
                 weak: WeakAugment | None = None, strong: StrongAugment | None = None,
                 augment_on: str = "device", prefetch_factor: int = 4, val_from: str = "train",
                 open_set: list | None = None, label_draw: str = "balanced", imbalance: dict | None = None):
        super().__init__()
        if label_draw not in LABEL_DRAWS:
            raise SSLTrainError(f"data.label_draw={label_draw!r}: expected one of {list(LABEL_DRAWS)}")
        self.open_set = list(open_set) if isinstance(open_set, (list, tuple)) else open_set
        self.label_draw = label_draw
        self.imbalance = Imbalance.from_config(imbalance)
        if augment_on not in ("device", "loader"):
            raise SSLTrainError(f"data.augment_on={augment_on!r}: expected 'device' or 'loader'")
        if val_from not in ("train", "test"):
            raise SSLTrainError(f"data.val_from={val_from!r}: expected 'train' (carve data.val_size from the "
                                f"training pool) or 'test' (from the test split)")
        self.augment_on, self.prefetch_factor, self.val_from = augment_on, prefetch_factor, val_from
        self.dataset_fn, self.num_labels, self.batch_size, self.mu = dataset, num_labels, batch_size, mu
        self.eval_batch_size, self.val_size, self.test_size = eval_batch_size, val_size, test_size
        self.include_labeled_in_unlabeled, self.seed, self.num_workers = include_labeled_in_unlabeled, seed, num_workers
        self.weak, self.strong = weak or WeakAugment(), strong or StrongAugment()
        self.views: tuple[str, ...] = ("weak", "strong")
        self.source: SourceData | None = None
        self._generator: torch.Generator | None = None
        for name, value in (("batch_size", batch_size), ("mu", mu), ("eval_batch_size", eval_batch_size)):
            if not _is_int(value) or value < (0 if name == "mu" else 1):
                raise SSLTrainError(f"data.{name}={value!r}: expected "
                                    + ("an integer >= 0" if name == "mu" else "a positive integer"))
        _check_dataset(dataset)
        if num_labels is not None and (not _is_int(num_labels) or num_labels < 1):
            raise SSLTrainError(f"data.num_labels={num_labels!r}: expected a positive integer (a multiple of the "
                                f"class count) or null (label the whole training pool)")
        _check_split_size("data.val_size", val_size)
        _check_split_size("data.test_size", test_size)
        if not isinstance(include_labeled_in_unlabeled, bool):
            raise SSLTrainError(f"data.include_labeled_in_unlabeled={include_labeled_in_unlabeled!r}: "
                                f"expected true or false")
        if not _is_int(seed) or seed < 0:
            raise SSLTrainError(f"data.seed={seed!r}: expected an integer >= 0 (data.seed follows seed)")
        if not _is_int(num_workers) or num_workers < 0:
            raise SSLTrainError(f"data.num_workers={num_workers!r}: expected an integer >= 0 "
                                f"(0: load in the main process)")
        if not _is_int(prefetch_factor) or prefetch_factor < 1:
            raise SSLTrainError(f"data.prefetch_factor={prefetch_factor!r}: expected a positive integer")
        for name, view in (("weak", weak), ("strong", strong)):
            if view is not None and not callable(view):
                raise SSLTrainError(f"data.{name}: expected an augmentation module (such as "
                                    f"ssl_train.data.augment.{name.capitalize()}Augment), got a {type(view).__name__}")

    # --- splits -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.source is not None:
            return
        source = self.dataset_fn()
        if self.open_set is not None:
            source = self._open_set(source)
        if self.val_from == "test" and source.val is not None:
            raise SSLTrainError("data.val_from=test: the dataset has a validation split of its own "
                                "(use data.val_from=train)")
        carve_val = source.val is None and self.val_from == "train"
        for split, size, carved in (("val", self.val_size, carve_val), ("test", self.test_size, source.test is None)):
            if carved and not size:
                raise SSLTrainError(
                    f"data.{split}_size=0: the dataset has no {split} split of its own and none is carved, so "
                    f"{USES[split]} would be the training images; carve one (data.{split}_size: a fraction or a "
                    f"count) or give the dataset its own ({OWN_SPLIT[split]})")
        self.splits: Splits = make_splits(
            source.train.labels, len(source.classes), self.num_labels, self.seed,
            val_size=self.val_size if carve_val else 0, test_size=0 if source.test is not None else self.test_size,
            include_labeled_in_unlabeled=self.include_labeled_in_unlabeled, classes=source.classes,
            own_split=OWN_SPLIT, label_draw=self.label_draw, imbalance=self.imbalance)
        self.labeled = Subset(source.train, self.splits.labeled)
        pools = [Subset(source.train, self.splits.unlabeled)] + ([Subset(source.unlabeled)] if source.unlabeled else [])
        self.unlabeled = pools[0] if len(pools) == 1 else ConcatSubset(pools)
        self.test = Subset(source.test) if source.test is not None else Subset(source.train, self.splits.test)
        if self.val_from == "test":
            self.test, self.val = self.test.carve(self.val_size, self.seed + 1, key="data.val_size")
        else:
            self.val = Subset(source.val) if source.val is not None else Subset(source.train, self.splits.val)
        self.val = self.val.where(self.val.labels != UNSEEN)  # validation scores the labeled classes only
        for name, split in (("validation", self.val), ("test", self.test), ("unlabeled", self.unlabeled)):
            if len(split) == 0 and (name != "unlabeled" or self.mu):
                raise SSLTrainError(f"the {name} split of the dataset is empty")
        self.source = source
        log.info("data: %s", self.describe_splits(carve_val))

    def _open_set(self, source: SourceData) -> SourceData:
        """The source seen through `open_set`: only the labeled classes are classes, the others UNSEEN."""
        seen = seen_classes(source.classes, self.open_set)
        splits = {name: relabel(getattr(source, name), seen) if getattr(source, name) is not None else None
                  for name in ("train", "val", "test", "unlabeled")}
        return dataclasses.replace(source, classes=[source.classes[c] for c in seen], **splits,
                                   meta=source.meta | {"unseen_classes": [c for i, c in enumerate(source.classes)
                                                                          if i not in seen]})

    def split_sizes(self) -> dict[str, int]:
        """How many images each split holds (a run's metrics.json keeps them as data/<split>)."""
        return {"labeled": len(self.labeled), "unlabeled": len(self.unlabeled), "val": len(self.val),
                "test": len(self.test)}

    def describe_splits(self, val_carved: bool) -> str:
        """One line: where each split came from, so that a folder of labeled images says how many train."""
        n = self.split_sizes()
        own = "the dataset's own"
        origin = {"val": f"carved: data.val_size={self.val_size}" if val_carved else own,
                  "test": own if self.splits.test is None else f"carved: data.test_size={self.test_size}"}
        if self.val_from == "test":
            origin["val"] = f"carved from the test split: data.val_size={self.val_size}"
        unseen = {name: int(np.sum(getattr(self, name).labels == UNSEEN)) for name in ("unlabeled", "test")}
        of = {name: f" ({k} of unseen classes)" if k else "" for name, k in unseen.items()}
        return (f"{n['labeled']} labeled training images, {n['unlabeled']} unlabeled{of['unlabeled']}, {n['val']} "
                f"validation ({origin['val']}) and {n['test']} test{of['test']} ({origin['test']})")

    @property
    def num_classes(self) -> int:
        return len(self.source.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.source.train.shape

    def labeled_class_prior(self) -> Tensor:
        """Class frequencies of the labeled set: what the unlabeled data is assumed to follow (distribution
        alignment)."""
        counts = np.bincount(self.labeled.labels, minlength=self.num_classes)
        return torch.as_tensor(counts / counts.sum(), dtype=torch.float32)

    def channel_stats(self, max_samples: int = 2000) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training pool in [0, 1] units, from a fixed sample."""
        pool = self.unlabeled if len(self.unlabeled) else self.labeled
        pick = np.random.default_rng(self.seed).permutation(len(pool))[:max_samples]
        x = pool[pick]["x"].float() * self.source.scale
        return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()

    def to_config(self) -> dict:
        """The Hydra config that rebuilds this data module, hence its splits (saved in checkpoints, so that a
        module built by hand exports and evaluates like one composed from conf/)."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}",
                "dataset": callable_config(self.dataset_fn), "num_labels": self.num_labels,
                "batch_size": self.batch_size, "mu": self.mu, "eval_batch_size": self.eval_batch_size,
                "val_size": self.val_size, "test_size": self.test_size,
                "include_labeled_in_unlabeled": self.include_labeled_in_unlabeled, "seed": self.seed,
                "num_workers": self.num_workers, "prefetch_factor": self.prefetch_factor,
                "augment_on": self.augment_on, "val_from": self.val_from, "open_set": self.open_set,
                "label_draw": self.label_draw, "imbalance": self.imbalance and self.imbalance.to_config(),
                "weak": self.weak.to_config(),
                "strong": self.strong.to_config()}

    # --- loaders ----------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        module = self.trainer.lightning_module if self.trainer is not None else None
        if module is not None and hasattr(module, "unlabeled_views"):
            self.views = tuple(module.unlabeled_views)
        rank, world = self._rank()
        wants_unlabeled = any(v.startswith(("weak", "strong")) for v in self.views)
        steps = PairedSteps(self.labeled, self.unlabeled if wants_unlabeled else None, self.batch_size,
                            self.mu * self.batch_size, self.seed, rank, world,
                            transform=self.make_views if self.augment_on == "loader" else None)
        start = self.trainer.global_step if self.trainer is not None else 0
        return self._loader(steps, StepSampler(start))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, BatchSampler(SequentialSampler(self.val), self.eval_batch_size, False))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test, BatchSampler(SequentialSampler(self.test), self.eval_batch_size, False))

    def _loader(self, dataset, sampler) -> DataLoader:
        # batch_size=None: the dataset returns whole batches; a private generator keeps
        # loader creation from consuming the global RNG (which would break exact resume).
        workers = self.num_workers > 0
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=workers,
                          prefetch_factor=self.prefetch_factor if workers else None,
                          generator=torch.Generator().manual_seed(self.seed))

    # --- on the device ------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Scale uint8 pixels to [0, 1] and, for training batches, build the augmented views (unless the loader did)."""
        if "lb" not in batch:
            return {"x": batch["x"].float() * self.source.scale, "y": batch["y"]}
        return batch if self.augment_on == "loader" else self.make_views(batch)

    def make_views(self, batch: dict) -> dict:
        """A raw training batch (uint8 pixels) to the algorithm's input: scaled, weakly augmented labeled
        samples and the requested unlabeled views, drawn from the step's own generator."""
        scale = self.source.scale
        gen = self._step_generator(batch["lb"]["x"].device, int(batch["step"]))
        out = {"step": batch["step"], "lb": {"x": self.weak(batch["lb"]["x"].float() * scale, gen),
                                             "y": batch["lb"]["y"], "idx": batch["lb"]["idx"]}}
        if "ulb" in batch:
            x = batch["ulb"]["x"].float() * scale
            out["ulb"] = {view: self._augmenter(view)(x, gen) for view in self.views} | {"idx": batch["ulb"]["idx"]}
            out["ulb_truth"] = batch["ulb"]["y"]
        return out

    def _augmenter(self, view: str):
        if view.startswith("weak"):
            return self.weak
        if view.startswith("strong"):
            return self.strong
        raise SSLTrainError(f"unknown view {view!r}: view names start with 'weak' or 'strong'")

    def _step_generator(self, device: torch.device, step: int) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
        rank, world = self._rank()
        return self._generator.manual_seed(self.seed * 1_000_003 + step * world + rank)


class ConcatSubset:
    """Several subsets seen as one (the train pool's unlabeled part plus an unlabeled-only split)."""

    def __init__(self, parts: list[Subset]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([p.labels for p in self.parts])

    def __getitem__(self, positions) -> dict[str, Tensor]:
        positions = np.asarray(positions)
        part = np.searchsorted(self.offsets, positions, side="right") - 1
        order = np.argsort(part, kind="stable")
        chunks = [self.parts[k][positions[part == k] - self.offsets[k]] for k in np.unique(part)]
        x, y = torch.cat([c["x"] for c in chunks]), torch.cat([c["y"] for c in chunks])
        inverse = torch.as_tensor(np.argsort(order))
        return {"x": x[inverse], "y": y[inverse]}
