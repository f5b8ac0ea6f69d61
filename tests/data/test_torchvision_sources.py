"""CIFAR-10/100, SVHN and STL-10 sources on tiny fake copies written in torchvision's real on-disk formats.

Nothing is downloaded: each test writes a few images per class in exactly the
files torchvision reads (pickles, .mat files, column-major .bin files). The
only patch is torchvision's md5 check, which a fake copy cannot pass:
`_check_integrity` returns True, and CIFAR's metadata check (which calls the
module-level `check_integrity` with a fixed md5) is pointed at the md5 of the
fake `batches.meta`/`meta` file, so that check still really runs.
"""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import scipy.io
import torch
from torchvision.datasets import CIFAR10, CIFAR100, STL10, SVHN

from ssl_train.data.datasets import cifar10, cifar100, stl10, svhn
from ssl_train.errors import SSLTrainError
from ssl_train.run.training import train

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """n random uint8 C×H×W images (random, so any stray transpose or channel swap shows up)."""
    return rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def _balanced_labels(rng: np.random.Generator, num_classes: int, per_class: int) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def _pickle(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- writers: torchvision's real file formats ---------------------------------------------------------------


def write_cifar10(root, per_class=8, test_per_class=2, seed=0) -> dict:
    """cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta: rows are R, G, B planes of 32×32."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = _images(rng, 10 * per_class, 32), _balanced_labels(rng, 10, per_class)
    test_x, test_y = _images(rng, 10 * test_per_class, 32), _balanced_labels(rng, 10, test_per_class)
    for b, (xs, ys) in enumerate(zip(np.array_split(train_x, 5), np.array_split(train_y, 5)), start=1):
        _pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5",
                                              "data": xs.reshape(len(xs), 3072), "labels": ys.tolist(),
                                              "filenames": [f"img_{b}_{i}.png" for i in range(len(xs))]})
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": test_x.reshape(len(test_x), 3072),
                                    "labels": test_y.tolist()})
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10000, "num_vis": 3072})
    return {"train": (train_x, train_y), "test": (test_x, test_y), "classes": CIFAR10_NAMES,
            "meta": folder / "batches.meta"}


def write_cifar100(root, per_class=3, test_per_class=1, seed=0) -> dict:
    """cifar-100-python/train, test, meta with fine_labels/coarse_labels and fine_label_names."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine_names = [f"fine_{k:02d}" for k in range(100)]
    out = {"classes": fine_names, "meta": folder / "meta"}
    for split, n in (("train", per_class), ("test", test_per_class)):
        x, y = _images(rng, 100 * n, 32), _balanced_labels(rng, 100, n)
        _pickle(folder / split, {"filenames": [f"{split}_{i}.png" for i in range(len(x))], "batch_label": split,
                                 "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(),
                                 "data": x.reshape(len(x), 3072)})
        out[split] = (x, y)
    _pickle(folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": [f"coarse_{k}" for k in range(20)]})
    return out


def write_svhn(root, per_class=8, test_per_class=2, extra=0, seed=0) -> dict:
    """train_32x32.mat / test_32x32.mat (and extra_32x32.mat): X is 32×32×3×N, y is N×1 with 10 meaning digit 0."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", per_class), ("test", test_per_class), ("extra", extra)):
        if not n:
            continue
        x, digit = _images(rng, 10 * n, 32), _balanced_labels(rng, 10, n)
        y = np.where(digit == 0, 10, digit).astype(np.uint8)[:, None]
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": y})
        out[split] = (x, digit)
    return out


def write_stl10(root, per_class=6, test_per_class=2, unlabeled=12, seed=0) -> dict:
    """stl10_binary/*_X.bin (3×96×96 per image, each channel stored column-major), *_y.bin (labels 1..10)."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    column_major = lambda x: np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes()  # noqa: E731
    out = {"classes": STL10_NAMES}
    for split, n in (("train", per_class), ("test", test_per_class)):
        x, y = _images(rng, 10 * n, 96), _balanced_labels(rng, 10, n)
        (folder / f"{split}_X.bin").write_bytes(column_major(x))
        (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
        out[split] = (x, y)
    u = _images(rng, unlabeled, 96)
    (folder / "unlabeled_X.bin").write_bytes(column_major(u))
    (folder / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n")
    out["unlabeled"] = u
    return out


# --- fixtures: one fake copy per dataset, md5 checks patched -----------------------------------------------


def _skip_md5(monkeypatch, *classes) -> None:
    for cls in classes:
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    root = tmp_path / "cifar10"
    written = write_cifar10(root)
    _skip_md5(monkeypatch, CIFAR10)
    monkeypatch.setitem(CIFAR10.meta, "md5", _md5(written["meta"]))
    return root, written


@pytest.fixture
def cifar100_root(tmp_path, monkeypatch):
    root = tmp_path / "cifar100"
    written = write_cifar100(root)
    _skip_md5(monkeypatch, CIFAR100)
    monkeypatch.setitem(CIFAR100.meta, "md5", _md5(written["meta"]))
    return root, written


@pytest.fixture
def svhn_root(tmp_path, monkeypatch):
    root = tmp_path / "svhn"
    written = write_svhn(root)
    _skip_md5(monkeypatch, SVHN)
    return root, written


@pytest.fixture
def stl10_root(tmp_path, monkeypatch):
    root = tmp_path / "stl10"
    written = write_stl10(root)
    _skip_md5(monkeypatch, STL10)
    return root, written


def _assert_split(split, images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    """A source split holds exactly the written images (N×C×H×W uint8, same pixel layout) and labels."""
    assert isinstance(split.images, torch.Tensor) and split.images.dtype == torch.uint8
    assert tuple(split.images.shape) == images.shape and split.shape == images.shape[1:]
    assert split.images.is_contiguous()
    assert torch.equal(split.images, torch.from_numpy(images))
    assert split.labels.dtype == np.int64 and len(split) == len(images)
    assert split.labels.min() >= 0 and split.labels.max() < num_classes
    np.testing.assert_array_equal(split.labels, labels)


# --- 1-2: the source functions read the fake copies correctly ------------------------------------------------


def test_cifar10_source(cifar10_root):
    root, written = cifar10_root
    source = cifar10(root=str(root))
    assert source.classes == CIFAR10_NAMES and source.scale == pytest.approx(1 / 255)
    _assert_split(source.train, *written["train"], num_classes=10)
    _assert_split(source.test, *written["test"], num_classes=10)
    assert source.val is None and source.unlabeled is None
    assert source.train.shape == (3, 32, 32) and len(source.train) == 80


def test_cifar100_source_uses_fine_labels(cifar100_root):
    root, written = cifar100_root
    source = cifar100(root=str(root))
    assert source.classes == written["classes"] and len(source.classes) == 100
    _assert_split(source.train, *written["train"], num_classes=100)
    _assert_split(source.test, *written["test"], num_classes=100)
    assert set(source.train.labels.tolist()) == set(range(100))  # fine, not the 20 coarse labels
    assert source.val is None and source.unlabeled is None


def test_svhn_source_maps_label_10_to_digit_0(svhn_root):
    root, written = svhn_root
    raw = scipy.io.loadmat(root / "train_32x32.mat")["y"].squeeze()
    assert (raw == 10).any() and not (raw == 0).any()  # the fake file really uses SVHN's "10 means 0"
    source = svhn(root=str(root))
    assert source.classes == [str(d) for d in range(10)]
    _assert_split(source.train, *written["train"], num_classes=10)
    _assert_split(source.test, *written["test"], num_classes=10)
    np.testing.assert_array_equal(source.train.labels[raw == 10], 0)
    assert source.unlabeled is None  # use_extra defaults to false


def test_svhn_extra_split_becomes_unlabeled(tmp_path, monkeypatch):
    root = tmp_path / "svhn"
    written = write_svhn(root, per_class=2, test_per_class=1, extra=3)
    _skip_md5(monkeypatch, SVHN)
    source = svhn(root=str(root), use_extra=True)
    extra_x, _ = written["extra"]
    assert source.unlabeled.images.dtype == torch.uint8
    assert torch.equal(source.unlabeled.images, torch.from_numpy(extra_x))
    np.testing.assert_array_equal(source.unlabeled.labels, np.full(len(extra_x), -1))


def test_stl10_source_reads_column_major_images_and_unlabeled_split(stl10_root):
    root, written = stl10_root
    source = stl10(root=str(root))
    assert source.classes == STL10_NAMES
    _assert_split(source.train, *written["train"], num_classes=10)  # labels 1..10 on disk became 0..9
    _assert_split(source.test, *written["test"], num_classes=10)
    assert source.train.shape == (3, 96, 96)
    unlabeled = source.unlabeled
    assert unlabeled.images.dtype == torch.uint8 and tuple(unlabeled.images.shape) == written["unlabeled"].shape
    assert torch.equal(unlabeled.images, torch.from_numpy(written["unlabeled"]))
    assert unlabeled.labels.dtype == np.int64 and (unlabeled.labels == -1).all()


# --- 3: the real data configs train a few steps on the fake copies ----------------------------------------


@pytest.mark.parametrize("name, root_fixture, extra", [
    ("cifar10", "cifar10_root", ["data.val_size=20"]),
    ("cifar100", "cifar100_root", ["data.num_labels=100", "data.val_size=100"]),
    ("svhn", "svhn_root", ["data.val_size=20"]),
    ("stl10", "stl10_root", ["data.val_size=10"]),
])
def test_data_config_trains_on_fake_copy(make_cfg, request, tmp_path, name, root_fixture, extra):
    root, written = request.getfixturevalue(root_fixture)
    cfg = make_cfg(f"data={name}", f"data.dataset.root={root}", "model=mlp", "model.hidden=[32]",
                   "data.eval_batch_size=32", *extra)
    metrics = train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["train/steps"] == 4
    assert 0.0 <= saved["test/acc"] <= 1.0 and metrics["test/acc"] == saved["test/acc"]


# --- 4: a missing dataset is an error naming the dataset, the resolved path and the fix ----------------------


@pytest.mark.parametrize("fn, name", [(cifar10, "CIFAR-10"), (cifar100, "CIFAR-100"), (svhn, "SVHN"),
                                      (stl10, "STL-10")])
@pytest.mark.parametrize("relative", [False, True])
def test_missing_dataset_names_resolved_root_and_download_flag(tmp_path, monkeypatch, fn, name, relative):
    empty = tmp_path / "empty"
    empty.mkdir()
    if relative:  # the config default root is the relative "data": the message gives the absolute path
        monkeypatch.chdir(tmp_path)
    with pytest.raises(SSLTrainError) as info:
        fn(root="empty" if relative else str(empty))
    message = str(info.value)
    assert name in message and str(empty.resolve()) in message and "download=true" in message
    assert list(empty.iterdir()) == []  # nothing was downloaded or created
