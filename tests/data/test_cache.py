"""The decoded image cache: the same pixels as decoding the files, keyed by the files, rebuilt when stale or
damaged, built once by concurrent processes, and never a write into the images' folder."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_train.data.datasets import CachedImages, FileImages, image_folder
from ssl_train.errors import SSLTrainError
from ssl_train.run.data import build_datamodule
from ssl_train.run.training import build

PARTS = ("train", "val", "test", "unlabeled")


def write_mixed_folder(root: Path) -> Path:
    """140 small images of several sizes, grayscale and RGB, PNG and JPEG: labeled/{a,b}, val/{a,b}, unlabeled/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folders = [("labeled/a", 40), ("labeled/b", 40), ("val/a", 5), ("val/b", 5), ("unlabeled/x", 50)]
    k = 0
    for folder, count in folders:
        (root / folder).mkdir(parents=True)
        for i in range(count):
            h, w = rng.integers(5, 24, 2)
            gray = k % 3 == 0
            pixels = rng.integers(0, 255, (h, w) if gray else (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i:03d}.{'jpg' if k % 2 else 'png'}")
            k += 1
    return root


@pytest.fixture
def mixed(tmp_path) -> Path:
    return write_mixed_folder(tmp_path / "images")


def pixels(source) -> dict[str, torch.Tensor]:
    return {p: getattr(source, p).load(np.arange(len(getattr(source, p)))) for p in PARTS if getattr(source, p)}


def entries(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "image_folder").glob("*/"))


def listing(root: Path) -> list[tuple[str, int, int]]:
    """Every file and folder under root with its size and mtime (ns)."""
    return sorted((str(p.relative_to(root)), (s := p.stat()).st_size, s.st_mtime_ns) for p in root.rglob("*"))


@pytest.mark.parametrize("channels", [3, 1])
def test_cached_pixels_are_the_decoded_files_byte_for_byte(mixed, tmp_path, channels, monkeypatch):
    monkeypatch.setattr("ssl_train.data.cache.MIN_CHUNK", 16)  # 140 files: several chunks, decoded in 2 processes
    cached = image_folder(str(mixed), image_size=(12, 10), channels=channels, cache_dir=tmp_path / "c",
                          cache_workers=2)
    plain = image_folder(str(mixed), image_size=(12, 10), channels=channels, cache=False,
                         cache_dir=tmp_path / "unused")
    assert not (tmp_path / "unused").exists()
    assert all(type(getattr(plain, p)) is FileImages for p in PARTS if getattr(plain, p))
    assert isinstance(cached.train, CachedImages) and cached.classes == plain.classes == ["a", "b"]
    got, want = pixels(cached), pixels(plain)
    assert set(got) == set(want) == {"train", "val", "unlabeled"}
    for part in got:
        assert got[part].dtype == torch.uint8 and got[part].shape == want[part].shape
        assert torch.equal(got[part], want[part]), part
        assert getattr(cached, part).paths == getattr(plain, part).paths
        assert (getattr(cached, part).labels == getattr(plain, part).labels).all()
    shuffled = np.random.default_rng(0).permutation(len(cached.train))[:17]  # a batch: any indices, any order
    assert torch.equal(cached.train.load(shuffled), plain.train.load(shuffled))
    entry = entries(tmp_path / "c")[0]
    index = json.loads((entry / "index.json").read_text())
    assert index["shape"] == [140, channels, 12, 10] and index["unreadable"] == []
    assert np.load(entry / "images.npy", mmap_mode="r", allow_pickle=False).shape == (140, channels, 12, 10)


def test_a_cached_source_pickles_as_its_file_name_not_its_pixels(mixed, tmp_path):
    train = image_folder(str(mixed), image_size=(16, 16), cache_dir=tmp_path / "c").train
    blob = pickle.dumps(train)
    assert len(blob) < train.load(np.arange(len(train))).numel() / 4  # a spawned loader worker maps the file
    assert torch.equal(pickle.loads(blob).load(np.arange(len(train))), train.load(np.arange(len(train))))


def test_a_changed_added_or_removed_file_names_a_new_entry(mixed, tmp_path):
    from PIL import Image

    cache_dir = tmp_path / "c"

    def load():
        source = image_folder(str(mixed), image_size=(8, 8), cache_dir=cache_dir)
        assert torch.equal(source.train.load(np.arange(len(source.train))),
                           image_folder(str(mixed), image_size=(8, 8), cache=False).train.load(
                               np.arange(len(source.train))))
        return source.train.file.parent, len(source.train)

    first, n = load()
    stamp = (first / "images.npy").stat().st_mtime_ns
    assert load() == (first, n) and (first / "images.npy").stat().st_mtime_ns == stamp  # unchanged: reused
    target = mixed / "labeled" / "a" / "000.png"
    before = target.stat()
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(target)  # new content
    changed, _ = load()
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))  # a touch
    touched, _ = load()
    Image.fromarray(np.full((7, 7), 200, np.uint8)).save(mixed / "labeled" / "b" / "new.png")
    added, n_added = load()
    (mixed / "labeled" / "b" / "new.png").unlink()
    (mixed / "labeled" / "a" / "001.jpg").unlink()
    removed, n_removed = load()
    assert len({first, changed, touched, added, removed}) == 5 and (n_added, n_removed) == (n + 1, n - 1)
    assert len(entries(cache_dir)) == 5


def test_the_images_folder_is_never_written(mixed, tmp_path):
    before = listing(mixed)
    for _ in range(2):  # a build, then a read
        source = image_folder(str(mixed), image_size=(8, 8), cache_dir=tmp_path / "c")
        pixels(source)
    assert listing(mixed) == before and entries(tmp_path / "c")


@pytest.mark.parametrize("damage", ["truncate", "index"])
def test_a_damaged_entry_is_rebuilt(mixed, tmp_path, caplog, damage):
    first = image_folder(str(mixed), image_size=(8, 8), cache_dir=tmp_path / "c")
    want = pixels(first)
    entry = entries(tmp_path / "c")[0]
    if damage == "truncate":
        os.truncate(entry / "images.npy", (entry / "images.npy").stat().st_size // 2)
    else:
        (entry / "index.json").write_text('{"key": ')
    with caplog.at_level(logging.WARNING, logger="ssl_train.data.cache"):
        again = image_folder(str(mixed), image_size=(8, 8), cache_dir=tmp_path / "c")
    assert "damaged" in caplog.text and entries(tmp_path / "c") == [entry]
    assert all(torch.equal(a, b) for a, b in zip(pixels(again).values(), want.values(), strict=True))
    images = np.load(entry / "images.npy", mmap_mode="r", allow_pickle=False)
    assert (entry / "images.npy").stat().st_size == images.offset + images.nbytes


def _build_and_digest(root, cache_dir, barrier, results):
    barrier.wait()  # both processes start building at the same moment
    source = image_folder(str(root), image_size=(16, 16), cache_dir=cache_dir, cache_workers=1)
    results.put(hashlib.sha256(b"".join(t.numpy().tobytes() for t in pixels(source).values())).hexdigest())


def test_two_processes_building_at_once_end_with_one_valid_entry(mixed, tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_build_and_digest, args=(mixed, tmp_path / "c", barrier, results))
                 for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0, 0]
    want = hashlib.sha256(b"".join(t.numpy().tobytes() for t in pixels(
        image_folder(str(mixed), image_size=(16, 16), cache=False)).values())).hexdigest()
    assert [results.get(timeout=5), results.get(timeout=5)] == [want, want]
    names = sorted(p.name for p in (tmp_path / "c" / "image_folder").iterdir())
    assert len(entries(tmp_path / "c")) == 1 and not [n for n in names if n.endswith(".tmp")]


def test_unreadable_files_are_recorded_so_a_cached_start_skips_or_refuses_them_again(mixed, tmp_path):
    (mixed / "labeled" / "a" / "broken.png").write_bytes(b"not a png")
    for _ in range(2):  # a build, then from the index
        with pytest.raises(SSLTrainError, match=r"unreadable image file .*broken\.png"):
            image_folder(str(mixed), cache_dir=tmp_path / "c")
        with pytest.warns(UserWarning, match="broken.png"):
            assert len(image_folder(str(mixed), on_bad_image="skip", cache_dir=tmp_path / "c").train) == 80
    assert len(entries(tmp_path / "c")) == 1


def test_an_unwritable_cache_dir_is_one_line_naming_it(compose_cfg, mixed, tmp_path):
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    cfg = compose_cfg("config", ["data=image_folder", f"data.dataset.root={mixed}",
                                 f"data.dataset.cache_dir={blocked}"])
    message = re.escape(f"image cache folder {blocked / 'image_folder'} is not writable")
    with pytest.raises(SSLTrainError, match=message) as err:
        build_datamodule(cfg.data)
    assert "\n" not in str(err.value) and "data.dataset.cache=false" in str(err.value)
    with pytest.raises(SSLTrainError, match=r"data.dataset.cache_workers=0: expected a positive integer"):
        image_folder(str(mixed), cache_workers=0)


def test_the_datamodule_trains_from_the_cache(make_cfg, image_root, tmp_path):
    cfg = make_cfg("data=image_folder", f"data.dataset.root={image_root}", "data.dataset.image_size=[16,16]",
                   f"data.dataset.cache_dir={tmp_path / 'c'}", "model=mlp", "data.num_workers=1")
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 4 and all(isinstance(getattr(datamodule.source, p), CachedImages)
                                            for p in ("train", "unlabeled"))
    assert len(entries(tmp_path / "c")) == 1
    raw = datamodule.train_dataloader().dataset[0]
    assert raw["lb"]["x"].dtype == torch.uint8 and raw["ulb"]["x"].shape == (20, 3, 16, 16)
