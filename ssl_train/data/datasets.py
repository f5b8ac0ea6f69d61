"""Dataset sources: each returns the raw images of its splits as uint8 tensors (or files, read on demand or
from their decoded cache).

A source says nothing about labeled/unlabeled: that is the split's business
(`splits.py`). Pixel values become floats in [0, 1] only on the device, by
multiplying with `scale`, so loaders move compact uint8 batches.
"""

from __future__ import annotations

import functools
import numbers
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL
import torch
from torch import Tensor

from ssl_train.data.cache import open_cache
from ssl_train.errors import SSLTrainError, first_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_ints(key: str, value, length: int, what: str) -> list[int]:
    """`value` as `length` positive integers, else an error naming the config key."""
    items = list(value) if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__") else value
    if not isinstance(items, list) or len(items) != length or not all(_is_int(v) and v >= 1 for v in items):
        raise SSLTrainError(f"{key}={items!r}: expected {length} positive integers ({what})")
    return [int(v) for v in items]


def _check_channels(key: str, channels) -> None:
    if not _is_int(channels) or channels not in (1, 3):
        raise SSLTrainError(f"{key}={channels!r}: expected 1 (grayscale) or 3 (RGB)")


def _check_flag(key: str, value) -> None:
    if not isinstance(value, bool):
        raise SSLTrainError(f"{key}={value!r}: expected true or false")


class TensorImages:
    """Images held in memory as one uint8 N×C×H×W tensor."""

    def __init__(self, images: Tensor, labels: np.ndarray):
        self.images, self.labels = images.contiguous(), np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def load(self, idx: np.ndarray) -> Tensor:
        return self.images[torch.as_tensor(idx, dtype=torch.long)]


class FileImages:
    """Image files decoded on access and resized to one shape, so a folder of any size streams."""

    def __init__(self, paths: list[Path], labels: np.ndarray, channels: int, size: tuple[int, int]):
        self.paths, self.labels = paths, np.asarray(labels, dtype=np.int64)
        self.channels, self.size = channels, tuple(size)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def load(self, idx: np.ndarray) -> Tensor:
        return torch.stack([read_image(self.paths[i], self.channels, self.size) for i in idx])


class CachedImages(FileImages):
    """Image files served from their decoded cache entry (`ssl_train.data.cache`): a batch is one fancy index of
    a memory-mapped array. They still name their files (samples, audits and evaluation read `paths`)."""

    def __init__(self, paths: list[Path], labels: np.ndarray, channels: int, size: tuple[int, int], file: Path,
                 rows: np.ndarray, images: np.ndarray | None = None):
        super().__init__(paths, labels, channels, size)
        self.file, self.rows, self._images = file, np.asarray(rows, dtype=np.int64), images

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_images": None}  # a process that unpickles it maps the file, not a copy of it

    def load(self, idx: np.ndarray) -> Tensor:
        if self._images is None:
            self._images = np.load(self.file, mmap_mode="r", allow_pickle=False)
        return torch.from_numpy(self._images[self.rows[np.asarray(idx, dtype=np.int64)]])


def read_image(path: Path, channels: int, size: tuple[int, int]) -> Tensor:
    """Decode one file to a uint8 C×H×W tensor; an unreadable file is an error naming it."""
    return torch.from_numpy(decode_image(path, channels, size))


def decode_image(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """`read_image` as a numpy array: the one decode, for files read on access and for the cache alike."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # PIL raises many types for corrupt files
        raise SSLTrainError(f"unreadable image file {path}: {exc}") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return array.copy()


def _decode_checked(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray | None:
    """What the cache stores for a file: its pixels, or None where `readable` rejects it (as the uncached
    source would)."""
    return decode_image(path, channels, size) if readable(path) else None


@dataclass
class SourceData:
    """The raw splits of a dataset. `train` is the pool labels are drawn from; absent splits are carved from it."""

    train: TensorImages | FileImages
    classes: list[str]
    scale: float
    test: TensorImages | FileImages | None = None
    val: TensorImages | FileImages | None = None
    unlabeled: TensorImages | FileImages | None = None
    meta: dict = field(default_factory=dict)


def digits() -> SourceData:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, values 0..16): no download."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8))[:, None]
    return SourceData(train=TensorImages(images, bunch.target), classes=[str(c) for c in range(10)], scale=1 / 16)


def synthetic(num_samples: int = 2000, num_classes: int = 10, image_shape: tuple[int, int, int] = (3, 32, 32),
              noise: float = 0.1, seed: int = 0) -> SourceData:
    """Learnable random images of any shape and class count, for tests and speed benchmarks.

    Each class has a smooth random prototype; a sample is its prototype shifted
    by a few pixels plus Gaussian noise.
    """
    for key, value in (("num_samples", num_samples), ("num_classes", num_classes)):
        if not _is_int(value) or value < 1:
            raise SSLTrainError(f"data.dataset.{key}={value!r}: expected a positive integer")
    if not _is_int(seed):
        raise SSLTrainError(f"data.dataset.seed={seed!r}: expected an integer")
    _check_channels("data.dataset.image_shape[0]", _positive_ints("data.dataset.image_shape", image_shape, 3,
                                                                  "channels, height, width")[0])
    if not isinstance(noise, numbers.Real) or isinstance(noise, bool) or not 0 <= noise < float("inf"):
        raise SSLTrainError(f"data.dataset.noise={noise!r}: expected a number >= 0 (the Gaussian noise's std)")
    c, h, w = image_shape
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, c, max(h // 4, 2), max(w // 4, 2), generator=gen)
    prototypes = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=gen)]
    shifts = torch.randint(-1, 2, (num_samples, 2), generator=gen)
    images = torch.stack([prototypes[y].roll(tuple(s.tolist()), dims=(1, 2)) for y, s in zip(labels, shifts)])
    images = (images + noise * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    return SourceData(train=TensorImages((images * 255).round().to(torch.uint8), labels.numpy()),
                      classes=[str(k) for k in range(num_classes)], scale=1 / 255)


def _torchvision(name: str, root: str, download: bool, build):
    """Build a torchvision dataset, turning 'not found' into a message that names the expected path."""
    try:
        return build()
    except (RuntimeError, OSError) as exc:  # OSError: a download attempt without network
        hint = "" if download else "; add data.dataset.download=true to fetch it"
        raise SSLTrainError(f"{name} not found under {Path(root).resolve()} ({exc}){hint}") from None


def _hwc(data: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))


def cifar10(root: str = "data", download: bool = False) -> SourceData:
    from torchvision.datasets import CIFAR10
    return _cifar("CIFAR-10", CIFAR10, root, download)


def cifar100(root: str = "data", download: bool = False) -> SourceData:
    from torchvision.datasets import CIFAR100
    return _cifar("CIFAR-100", CIFAR100, root, download)


def _cifar(name, cls, root, download) -> SourceData:
    _check_flag("data.dataset.download", download)
    train = _torchvision(name, root, download, lambda: cls(root, train=True, download=download))
    test = _torchvision(name, root, download, lambda: cls(root, train=False, download=download))
    return SourceData(train=TensorImages(_hwc(train.data), train.targets), classes=list(train.classes), scale=1 / 255,
                      test=TensorImages(_hwc(test.data), test.targets))


def svhn(root: str = "data", download: bool = False, use_extra: bool = False) -> SourceData:
    """SVHN train (labels drawn from it) and test; `use_extra` adds the 531k 'extra' images as unlabeled data."""
    from torchvision.datasets import SVHN

    _check_flag("data.dataset.download", download)
    _check_flag("data.dataset.use_extra", use_extra)
    load = lambda split: _torchvision("SVHN", root, download, lambda: SVHN(root, split=split, download=download))  # noqa: E731
    train, test = load("train"), load("test")
    extra = load("extra") if use_extra else None
    return SourceData(
        train=TensorImages(torch.from_numpy(train.data), train.labels), classes=[str(c) for c in range(10)],
        scale=1 / 255, test=TensorImages(torch.from_numpy(test.data), test.labels),
        unlabeled=TensorImages(torch.from_numpy(extra.data), np.full(len(extra.data), -1)) if extra else None)


def stl10(root: str = "data", download: bool = False) -> SourceData:
    """STL-10: 5,000 labeled train images, 8,000 test, and 100,000 unlabeled (96×96)."""
    from torchvision.datasets import STL10

    _check_flag("data.dataset.download", download)
    load = lambda split: _torchvision("STL-10", root, download, lambda: STL10(root, split=split, download=download))  # noqa: E731
    train, test, unlabeled = load("train"), load("test"), load("unlabeled")
    return SourceData(
        train=TensorImages(torch.from_numpy(train.data), train.labels), classes=list(train.classes), scale=1 / 255,
        test=TensorImages(torch.from_numpy(test.data), test.labels),
        unlabeled=TensorImages(torch.from_numpy(unlabeled.data), np.full(len(unlabeled.data), -1)))


def image_folder(root: str | None = None, image_size: tuple[int, int] = (32, 32), channels: int = 3,
                 on_bad_image: str = "error", cache: bool = True, cache_dir: str | None = None,
                 cache_workers: int | None = None) -> SourceData:
    """A user's own images: root/labeled/<class>/*, root/unlabeled/**/*, optional root/val|test/<class>/*.

    Files are resized to `image_size`; pixels are scaled to [0, 1]. With `cache`
    (the default) every file is decoded once, in `cache_workers` processes (None:
    one per CPU), into a memory-mapped array under `cache_dir` (None: the user's
    cache folder, `ssl_train.data.cache`) that batches are sliced from; it is
    rebuilt when any file changes. Without it, files are decoded on access.
    Every file's structure is checked up front (once per cache entry), so that a
    corrupt image fails the run before training (`on_bad_image=error`, the
    default) or is left out with a warning naming it (`on_bad_image=skip`).
    """
    image_size = tuple(_positive_ints("data.dataset.image_size", image_size, 2, "height, width"))
    _check_channels("data.dataset.channels", channels)
    if on_bad_image not in ("error", "skip"):
        raise SSLTrainError(f"data.dataset.on_bad_image={on_bad_image!r}: expected 'error' or 'skip'")
    _check_flag("data.dataset.cache", cache)
    if cache_dir is not None and not (isinstance(cache_dir, (str, os.PathLike)) and str(cache_dir)):
        raise SSLTrainError(f"data.dataset.cache_dir={cache_dir!r}: expected a folder path or null "
                            "(the user's cache folder)")
    if cache_workers is not None and (not _is_int(cache_workers) or cache_workers < 1):
        raise SSLTrainError(f"data.dataset.cache_workers={cache_workers!r}: expected a positive integer or null "
                            "(one per CPU)")
    if not root:
        raise SSLTrainError("data.dataset.root is required: the folder that holds labeled/<class>/*.png|jpg")
    base = Path(root)
    if not (base / "labeled").is_dir():
        raise SSLTrainError(f"image folder {base.resolve()} has no 'labeled' subfolder "
                            f"(expected {base}/labeled/<class>/*.png|jpg)")
    classes = sorted(p.name for p in (base / "labeled").iterdir() if p.is_dir())
    if not classes:
        raise SSLTrainError(f"{base / 'labeled'} holds no class folders (expected labeled/<class>/*.png|jpg)")

    def files(folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    def class_files(split: str) -> list[list[Path]] | None:
        """Each class's files in a split folder (None: no such folder)."""
        folder = base / split
        if not folder.is_dir():
            return None
        unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes)
        if unknown:
            raise SSLTrainError(f"{folder} has class folders {unknown} that {base / 'labeled'} lacks")
        return [files(folder / name) if (folder / name).is_dir() else [] for name in classes]

    found = {split: class_files(split) for split in ("labeled", "val", "test")}
    unlabeled = files(base / "unlabeled") if (base / "unlabeled").is_dir() else []
    listed = [p for per_class in found.values() for group in per_class or [] for p in group] + unlabeled
    entry = None
    if cache and listed:
        entry = open_cache(base, listed, (channels, *image_size), {"channels": channels, "size": list(image_size),
                                                                   "decoder": f"Pillow {PIL.__version__} bilinear"},
                           functools.partial(_decode_checked, channels=channels, size=image_size), cache_dir,
                           cache_workers)
    unreadable = entry.unreadable if entry else {p for p in listed if not readable(p)}
    for path in (p for p in listed if p in unreadable):
        if on_bad_image == "error":
            raise SSLTrainError(f"unreadable image file {path} (set data.dataset.on_bad_image=skip to leave it out)")
        warnings.warn(f"skipping unreadable image file {path}", stacklevel=2)

    def images(paths: list[Path], labels: list[int]) -> FileImages:
        if entry is None:
            return FileImages(paths, np.array(labels), channels, image_size)
        return CachedImages(paths, np.array(labels), channels, image_size, entry.file,
                            np.array([entry.rows[p] for p in paths]), entry.images)

    def labeled(split: str, required: bool) -> FileImages | None:
        if found[split] is None:
            return None
        paths, labels = [], []
        for k, (name, group) in enumerate(zip(classes, found[split])):
            kept = [p for p in group if p not in unreadable]
            if required and not kept:
                raise SSLTrainError(f"class folder {base / split / name} holds no readable images")
            paths += kept
            labels += [k] * len(kept)
        if not paths:
            raise SSLTrainError(f"split folder {base / split} holds no readable images")
        return images(paths, labels)

    unlabeled = [p for p in unlabeled if p not in unreadable]
    return SourceData(
        train=labeled("labeled", required=True), classes=classes, scale=1 / 255,
        val=labeled("val", required=False), test=labeled("test", required=False),
        unlabeled=images(unlabeled, [-1] * len(unlabeled)) if unlabeled else None)


def readable(path: Path) -> bool:
    """True when PIL can parse the file's structure (cheap: no full decode)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:
        return False


def npz(path: str | None = None) -> SourceData:
    """A user's arrays in one `.npz` file (`np.savez(path, x=..., y=..., split=..., classes=...)`).

    - `x`: uint8 images, N×H×W (grayscale) or N×H×W×C with C 1 or 3; pixels are scaled by 1/255.
    - `y`: integer class ids 0..K-1 per image, -1 for an unlabeled one.
    - `split` (optional, absent: every row is train): per image "train", "val", "test" or "unlabeled"
      (strings), or their positions 0, 1, 2, 3 (integers).
    - `classes` (optional, absent: "0".."max y"): the K class names that y indexes.

    Labeled train rows are the pool that labels are drawn from; val and test rows are those splits (carved from
    the pool when no row names them); rows with y = -1 or split "unlabeled" are the unlabeled data (a known y
    of an unlabeled row is only compared with pseudo-labels in the logs). The file is untrusted data: it is
    read with `allow_pickle=False`, so object arrays are refused, never unpickled.
    """
    names = ("train", "val", "test", "unlabeled")
    if not path:
        raise SSLTrainError("data.dataset.path is required: an .npz file with arrays x (uint8 images) and y "
                            "(class ids, -1: unlabeled)")
    file = Path(path)
    if not file.is_file():
        raise SSLTrainError(f"npz file {file.resolve()} not found (data.dataset.path)")
    try:
        archive = np.load(file, allow_pickle=False)
    except ValueError:  # neither a zip nor an .npy array: numpy would unpickle it, which is refused
        raise SSLTrainError(f"{file}: not an .npz archive (nor an .npy array; pickles are refused); save one with "
                            f"np.savez(path, x=images, y=labels)") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise SSLTrainError(f"{file}: not a readable .npz archive ({first_line(exc)}); save one with np.savez("
                            f"path, x=images, y=labels)") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SSLTrainError(f"{file}: a single .npy array, not an .npz archive; save one with np.savez("
                            f"path, x=images, y=labels)")

    def array(name: str, required: bool) -> np.ndarray | None:
        if name not in archive.files:
            if required:
                raise SSLTrainError(f"{file}: no array {name!r} (it holds {', '.join(archive.files) or 'none'}); "
                                    f"expected x (uint8 images) and y (class ids, -1: unlabeled)")
            return None
        try:
            return archive[name]
        except ValueError as exc:  # an object array: loading it would unpickle
            raise SSLTrainError(f"{file}: array {name!r} refused ({first_line(exc)}): expected numbers or "
                                f"strings") from None
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise SSLTrainError(f"{file}: array {name!r} is unreadable ({first_line(exc)})") from None

    with archive:
        x, y, split, classes = (array(name, name in ("x", "y")) for name in ("x", "y", "split", "classes"))
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)) or 0 in x.shape:
        raise SSLTrainError(f"{file}: x is {x.dtype} of shape {x.shape}: expected uint8 images of shape N×H×W or "
                            f"N×H×W×C with C 1 or 3")
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
        raise SSLTrainError(f"{file}: y is {y.dtype} of shape {y.shape}: expected {len(x)} integer class ids "
                            f"(one per image of x, -1: unlabeled)")
    if y.min() < -1:
        raise SSLTrainError(f"{file}: y holds {y.min()}: expected class ids >= 0, or -1 for an unlabeled image")
    if classes is not None:
        if classes.dtype.kind not in "US" or classes.ndim != 1 or len(set(classes.tolist())) != len(classes):
            raise SSLTrainError(f"{file}: classes is {classes.dtype} of shape {classes.shape}: expected distinct "
                                f"class names (a 1-D string array)")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in classes.tolist()]
        if y.max() >= len(classes):
            raise SSLTrainError(f"{file}: y holds class id {y.max()} but classes has {len(classes)} names "
                                f"(expected ids 0..{len(classes) - 1})")
    elif y.max() >= len(x):
        raise SSLTrainError(f"{file}: y holds class id {y.max()} for {len(x)} images: expected ids 0..K-1 of K "
                            f"classes")
    if split is None:
        codes = np.zeros(len(x), dtype=np.int64)
    elif split.shape != (len(x),) or split.dtype.kind not in "USiu":
        raise SSLTrainError(f"{file}: split is {split.dtype} of shape {split.shape}: expected {len(x)} values "
                            f"(one per image of x), each one of {', '.join(names)} or its position 0-3")
    else:
        found, inverse = np.unique(np.char.decode(split) if split.dtype.kind == "S" else split, return_inverse=True)
        known = names if found.dtype.kind == "U" else range(len(names))
        unknown = [v for v in found.tolist() if v not in known]
        if unknown:
            raise SSLTrainError(f"{file}: split holds {', '.join(map(repr, unknown[:5]))}: expected "
                                f"{', '.join(names)} or their positions 0-3")
        codes = np.array([list(known).index(v) for v in found.tolist()], dtype=np.int64)[inverse]
    unlabeled = (y == -1) | (codes == 3)
    for k in (1, 2):
        missing = np.flatnonzero((codes == k) & (y == -1))
        if len(missing):
            raise SSLTrainError(f"{file}: {len(missing)} {names[k]} rows have y = -1 (row {missing[0]} first): "
                                f"{names[k]} images need their class ids")
    if not ((codes == 0) & ~unlabeled).any():
        raise SSLTrainError(f"{file}: no labeled train row (y >= 0, split train): labels are drawn from them")
    hwc = x[..., None] if x.ndim == 3 else x
    images = torch.from_numpy(hwc.transpose(0, 3, 1, 2))

    def part(rows: np.ndarray) -> TensorImages | None:
        rows = np.flatnonzero(rows)
        return TensorImages(images[torch.from_numpy(rows)], y[rows]) if len(rows) else None

    return SourceData(train=part((codes == 0) & ~unlabeled), scale=1 / 255,
                      classes=classes or [str(k) for k in range(y.max() + 1)],
                      val=part(codes == 1), test=part(codes == 2), unlabeled=part(unlabeled))
