"""data=npz: a user's arrays (x, y, split, classes) in one .npz file, read without unpickling."""

from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import npz
from ssl_train.errors import SSLTrainError
from ssl_train.run.training import build, train

SPLIT = ["train"] * 36 + ["val"] * 6 + ["test"] * 9 + ["unlabeled"] * 5


def arrays(channels: int | None = 3) -> dict[str, np.ndarray]:
    """56 random 8×8 images of 3 classes: 36 train rows (6 of them y = -1), 6 val, 9 test and 5 rows of split
    unlabeled whose y is known."""
    rng = np.random.default_rng(0)
    shape = (len(SPLIT), 8, 8) + ((channels,) if channels else ())
    y = np.arange(len(SPLIT)) % 3
    y[30:36] = -1
    return {"x": rng.integers(0, 256, shape, dtype=np.uint8), "y": y, "split": np.array(SPLIT),
            "classes": np.array(["cat", "dog", "fox"])}


def save(tmp_path, name="data.npz", **data):
    np.savez(tmp_path / name, **data)
    return tmp_path / name


def datamodule(path, **options) -> SSLDataModule:
    dm = SSLDataModule(functools.partial(npz, str(path)), **({"num_labels": None, "batch_size": 4, "mu": 2} | options))
    dm.setup()
    return dm


def test_rows_go_to_their_splits_with_their_pixels(tmp_path):
    data = arrays()
    dm = datamodule(save(tmp_path, **data))
    assert dm.source.classes == ["cat", "dog", "fox"] and dm.input_shape == (3, 8, 8) and dm.source.scale == 1 / 255
    assert (len(dm.labeled), len(dm.val), len(dm.test), len(dm.unlabeled)) == (30, 6, 9, 11)
    assert sorted(dm.unlabeled.labels.tolist()) == [-1] * 6 + sorted(data["y"][51:].tolist())
    test = dm.test[np.arange(9)]
    assert torch.equal(test["x"], torch.from_numpy(data["x"][42:51]).permute(0, 3, 1, 2))
    assert test["y"].tolist() == data["y"][42:51].tolist()
    scaled = dm.on_after_batch_transfer(test, 0)["x"]
    torch.testing.assert_close(scaled, torch.from_numpy(data["x"][42:51]).permute(0, 3, 1, 2).float() / 255)
    # num_labels draws from the labeled train rows; the rest of them join the unlabeled data
    drawn = datamodule(save(tmp_path, **data), num_labels=6)
    assert len(drawn.labeled) == 6 and np.bincount(drawn.labeled.labels).tolist() == [2, 2, 2]
    assert len(drawn.unlabeled) == 24 + 11


def test_integer_split_codes_grayscale_and_carved_splits(tmp_path):
    data = arrays(channels=None)
    codes = np.array([("train", "val", "test", "unlabeled").index(s) for s in SPLIT])
    by_code = datamodule(save(tmp_path, "codes.npz", x=data["x"], y=data["y"], split=codes))
    assert by_code.source.classes == ["0", "1", "2"] and by_code.input_shape == (1, 8, 8)
    assert (len(by_code.labeled), len(by_code.val), len(by_code.test), len(by_code.unlabeled)) == (30, 6, 9, 11)
    # No split array: every labeled row is train, val and test are carved from it (stratified, seeded)
    carved = datamodule(save(tmp_path, "plain.npz", x=data["x"][..., None], y=data["y"]), val_size=6, test_size=9)
    assert carved.input_shape == (1, 8, 8)
    assert (len(carved.labeled), len(carved.val), len(carved.test), len(carved.unlabeled)) == (35, 6, 9, 6)
    held = np.concatenate([carved.splits.val, carved.splits.test])
    assert not np.isin(carved.splits.labeled, held).any()


def bad(name: str, data: dict) -> dict:
    """`data` spoiled in the way `name` says."""
    n = len(data["y"])
    return {
        "no x": {k: v for k, v in data.items() if k != "x"},
        "no y": {k: v for k, v in data.items() if k != "y"},
        "float x": data | {"x": data["x"].astype(np.float32)},
        "two channels": data | {"x": data["x"][..., :2]},
        "flat x": data | {"x": data["x"].reshape(n, -1)},
        "float y": data | {"y": data["y"].astype(np.float64)},
        "short y": data | {"y": data["y"][:-1]},
        "y below -1": data | {"y": np.where(np.arange(n) == 3, -2, data["y"])},
        "y beyond classes": data | {"classes": np.array(["cat", "dog"])},
        "y beyond the images": {k: v for k, v in data.items() if k != "classes"} | {"y": np.where(
            np.arange(n) == 5, n, data["y"])},
        "short split": data | {"split": data["split"][:-2]},
        "unknown split": data | {"split": np.where(np.arange(n) == 0, "training", data["split"])},
        "split code 4": data | {"split": np.full(n, 4)},
        "unlabeled val row": data | {"y": np.where(np.arange(n) == 40, -1, data["y"])},
        "no train row": data | {"split": np.where((data["split"] == "train") & (data["y"] >= 0), "test",
                                                  data["split"])},
        "object classes": data | {"classes": np.array(["cat", 1, None], dtype=object)},
    }[name]


@pytest.mark.parametrize("name, message", [
    ("no x", "no array 'x' (it holds y, split, classes); expected x (uint8 images) and y"),
    ("no y", "no array 'y' (it holds x, split, classes)"),
    ("float x", "x is float32 of shape (56, 8, 8, 3): expected uint8 images of shape N×H×W or N×H×W×C with C 1 or 3"),
    ("two channels", "x is uint8 of shape (56, 8, 8, 2): expected uint8 images"),
    ("flat x", "x is uint8 of shape (56, 192): expected uint8 images"),
    ("float y", "y is float64 of shape (56,): expected 56 integer class ids"),
    ("short y", "y is int64 of shape (55,): expected 56 integer class ids (one per image of x"),
    ("y below -1", "y holds -2: expected class ids >= 0, or -1 for an unlabeled image"),
    ("y beyond classes", "y holds class id 2 but classes has 2 names (expected ids 0..1)"),
    ("y beyond the images", "y holds class id 56 for 56 images: expected ids 0..K-1 of K classes"),
    ("short split", "split is <U9 of shape (54,): expected 56 values (one per image of x), each one of train, val"),
    ("unknown split", "split holds 'training': expected train, val, test, unlabeled or their positions 0-3"),
    ("split code 4", "split holds 4: expected train, val"),
    ("unlabeled val row", "1 val rows have y = -1 (row 40 first): val images need their class ids"),
    ("no train row", "no labeled train row (y >= 0, split train)"),
    ("object classes", "array 'classes' refused (Object arrays cannot be loaded when allow_pickle=False)"),
])
def test_bad_arrays_are_one_line_naming_the_file_and_the_problem(tmp_path, name, message):
    path = save(tmp_path, **bad(name, arrays()))
    with pytest.raises(SSLTrainError) as error:
        npz(str(path))
    assert str(error.value).startswith(f"{path}: {message}"), error.value
    assert "\n" not in str(error.value)


def test_bad_files_are_one_line(make_cfg, tmp_path):
    with pytest.raises(SSLTrainError, match="data.dataset.path is required"):
        build(make_cfg("data=npz"))
    with pytest.raises(SSLTrainError, match=f"npz file {tmp_path / 'nowhere.npz'} not found"):
        npz(str(tmp_path / "nowhere.npz"))
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(SSLTrainError, match=r"text\.npz: not an \.npz archive \(nor an \.npy array; pickles are"):
        npz(str(tmp_path / "text.npz"))
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(SSLTrainError, match=r"cut\.npz: not a readable \.npz archive \(File is not a zip file\)"):
        npz(str(tmp_path / "cut.npz"))
    np.save(tmp_path / "one.npy", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(SSLTrainError, match=r"one\.npy: a single \.npy array, not an \.npz archive"):
        npz(str(tmp_path / "one.npy"))


def test_ssl_train_data_npz_trains(make_cfg, tmp_path):
    path = save(tmp_path, **arrays(channels=None))
    metrics = train(make_cfg("data=npz", f"data.dataset.path={path}", "trainer.max_steps=3",
                             "trainer.val_check_interval=3", "data.weak.flip=false"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["train/steps"] == 3 and metrics["test/acc"] == saved["test/acc"]


def test_the_usps_benchmark_protocol_is_stratified_disjoint_and_reads_back(tmp_path, monkeypatch):
    """scripts/benchmark_usps.py's split, on 3 classes × 40 images: 30 test, 2 labeled and 3 val per class."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "scripts"))
    usps = importlib.import_module("benchmark_usps")
    y = np.repeat(np.arange(3), 40)
    split = usps.protocol(y, seed=0, test=30, labeled=2, val=3)
    for name, per_class in (("test", 10), ("train", 2), ("val", 3), ("unlabeled", 25)):
        assert np.bincount(y[split == name], minlength=3).tolist() == [per_class] * 3, name
    assert not np.array_equal(split, usps.protocol(y, seed=1, test=30, labeled=2, val=3))
    x = np.zeros((120, 2, 2), dtype=np.uint8)
    x[:, 0, 0] = np.arange(120)  # each image names itself
    source = save(tmp_path, "all.npz", x=x, y=y)
    dm = datamodule(usps.prepare(source, 0, tmp_path / "data", test=30, labeled=2, val=3))
    assert (len(dm.labeled), len(dm.val), len(dm.test), len(dm.unlabeled)) == (6, 9, 30, 75)
    assert (dm.unlabeled.labels == -1).all()
    seen = np.concatenate([getattr(dm.source, part).images[:, 0, 0, 0].numpy()
                           for part in ("train", "val", "test", "unlabeled")])
    assert sorted(seen.tolist()) == list(range(120))  # every image once: the splits are disjoint
