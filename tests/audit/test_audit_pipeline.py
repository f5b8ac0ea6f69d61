"""ssl-audit end to end on an image folder with planted duplicates, a wrong label and a broken file;
the leakage switch of the command line and of training; bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_train.audit.pipeline import AuditOptions, audit
from ssl_train.cli import data_config
from ssl_train.errors import SSLTrainError

FOLDER = ["data=image_folder", "data.dataset.channels=1", "data.dataset.image_size=[8,8]"]


@pytest.fixture
def planted(digit_folder, tmp_path) -> dict[str, Path]:
    """A digits image folder with: an exact copy labeled→test, a BMP re-encoding within unlabeled, a shifted copy
    of a val image in unlabeled, a "0" filed under 7, and a broken file."""
    root = digit_folder(tmp_path / "images", splits=("labeled", "val", "test"), per_class=10)
    digit_folder(tmp_path / "pool", splits=("unlabeled",), per_class=3, start=40)
    (root / "unlabeled").mkdir()
    for path in sorted((tmp_path / "pool" / "unlabeled").rglob("*.png")):
        shutil.copyfile(path, root / "unlabeled" / path.name)
    files = {"labeled": sorted((root / "labeled" / "3").glob("*.png"))[0],
             "val": sorted((root / "val" / "5").glob("*.png"))[0],
             "unlabeled": sorted((root / "unlabeled").glob("*.png"))[0]}
    files["exact"] = root / "test" / "3" / "copy_of_labeled.png"
    shutil.copyfile(files["labeled"], files["exact"])
    files["bmp"] = root / "unlabeled" / "reencoded.bmp"
    Image.open(files["unlabeled"]).save(files["bmp"])
    pixels = np.asarray(Image.open(files["val"]))
    moved = np.zeros_like(pixels)
    moved[:, 1:] = pixels[:, :-1]
    files["shifted"] = root / "unlabeled" / "shifted_val.png"
    Image.fromarray(moved).save(files["shifted"])
    files["wrong"] = root / "labeled" / "7" / "actually_a_zero.png"
    digit_folder(tmp_path / "extra", splits=("x",), per_class=1, start=60)  # images used nowhere else
    shutil.copyfile(next((tmp_path / "extra" / "x" / "0").glob("*.png")), files["wrong"])
    files["broken"] = root / "unlabeled" / "broken.png"
    files["broken"].write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    files["root"] = root
    return files


def compose_data(compose_cfg, root: Path, *extra: str) -> dict:
    return data_config(compose_cfg("audit", [*FOLDER, f"data.root={root}", *extra]))


def as_pairs(result: dict) -> set[tuple]:
    return {(d["kind"], Path(d["a"]).name, d["split_a"], Path(d["b"]).name, d["split_b"]) for d in result["duplicates"]}


def test_planted_problems_are_found(planted, compose_cfg, tmp_path):
    result = audit(compose_data(compose_cfg, planted["root"]), tmp_path / "out", AuditOptions())
    pairs = as_pairs(result)
    assert ("exact", planted["labeled"].name, "labeled", "copy_of_labeled.png", "test") in pairs
    assert ("near", "shifted_val.png", "unlabeled", planted["val"].name, "val") in pairs
    assert any(k == "exact" and {a, b} == {planted["unlabeled"].name, "reencoded.bmp"} for k, a, _, b, _ in pairs)
    assert len(pairs) == 3  # nothing else in this folder is a duplicate
    assert result["summary"]["leaked"] == {"val": 1, "test": 1} and result["summary"]["leakage"]
    assert [u["path"] for u in result["unreadable"]] == [str(planted["broken"])]
    assert result["class_balance"]["labeled"]["counts"]["7"] == 11
    issues = result["label_check"]
    wrong = [i for i in issues["issues"] if i["path"] == str(planted["wrong"])]
    assert issues["reliable"] and wrong and wrong[0]["given"] == "7" and wrong[0]["suggested"] == "0"
    assert json.loads((tmp_path / "out" / "audit.json").read_text()) == result


@pytest.mark.parametrize("size", [16, 32])
def test_near_duplicates_do_not_depend_on_the_size_images_are_read_at(planted, compose_cfg, tmp_path, size):
    """8×8 files read at 32×32: the one-pixel shift of the files is still one pixel of the thumbnails."""
    folder = [*FOLDER[:-1], f"data.dataset.image_size=[{size},{size}]", f"data.root={planted['root']}"]
    result = audit(data_config(compose_cfg("audit", folder)), tmp_path / "out", AuditOptions())
    pairs = as_pairs(result)
    assert ("near", "shifted_val.png", "unlabeled", planted["val"].name, "val") in pairs and len(pairs) == 3


def test_audit_html_is_self_contained_and_shows_the_pairs(planted, compose_cfg, self_contained, tmp_path):
    audit(compose_data(compose_cfg, planted["root"]), tmp_path, AuditOptions())
    images = self_contained(tmp_path / "audit.html")
    assert {"duplicate pairs", "labeled class counts", "suspicious labels"} <= set(images)
    assert "copy_of_labeled.png" in (tmp_path / "audit.html").read_text()


def run_audit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ssl_train.audit_cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_fail_on_leakage_exits_1_after_writing_the_report(planted, tmp_path):
    out = tmp_path / "run"
    result = run_audit(*FOLDER, f"data.root={planted['root']}", "audit.fail_on_leakage=true",
                       "audit.label_check=false", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: data leakage: 1 val and 1 test images have (near-)duplicates in earlier splits (see {out}/audit.html)")
    assert "leaked into val / test   1 / 1 images" in result.stdout
    assert (out / "audit.json").is_file() and (out / "audit.html").is_file()


def test_training_refuses_test_leakage_unless_allowed(planted, make_cfg, tmp_path):
    from ssl_train.train import run as train

    overrides = [*FOLDER, f"data.dataset.root={planted['root']}", "data.dataset.on_bad_image=skip",
                 "audit.before_train=true"]
    with pytest.raises(SSLTrainError, match=r"data leakage: 1 test images .*audit.allow_test_leakage=true"):
        train(make_cfg(*overrides))
    assert (tmp_path / "audit" / "audit.json").is_file() and not (tmp_path / "checkpoints").exists()
    metrics = train(make_cfg(*overrides, "audit.allow_test_leakage=true"))
    assert metrics["train/steps"] == 4


def test_a_clean_folder_passes_and_an_empty_split_is_named(digit_folder, compose_cfg, tmp_path):
    root = digit_folder(tmp_path / "clean", splits=("labeled", "test"), per_class=5)
    result = audit(compose_data(compose_cfg, root), tmp_path / "ok", AuditOptions())
    assert result["summary"]["exact_pairs"] == result["summary"]["near_pairs"] == 0
    assert not result["summary"]["leakage"] and result["label_check"]["reliable"] is False
    for c in range(10):
        (root / "val" / str(c)).mkdir(parents=True)
    with pytest.raises(SSLTrainError, match=f"split folder {root / 'val'} holds no readable images"):
        audit(compose_data(compose_cfg, root), tmp_path / "bad", AuditOptions())
    assert not (tmp_path / "bad").exists()


def test_data_root_shorthand_needs_an_image_folder(compose_cfg):
    with pytest.raises(SSLTrainError, match="data.root=/x: the digits dataset reads no folder"):
        data_config(compose_cfg("audit", ["data.root=/x"]))


def test_scan_keeps_compact_records_only(compose_cfg, tmp_path):
    """Streaming: per image, the records held in memory are a hash, a split, a label and a 64-value descriptor."""
    from ssl_train.audit.pipeline import _datamodule
    from ssl_train.audit.scan import scan

    datamodule, _ = _datamodule(data_config(compose_cfg("audit", [])))
    records = scan(datamodule, batch_size=100)
    try:
        n = len(records)
        assert n == 1797 and records.thumbs(np.arange(3)).shape == (3, 8, 8)
        per_image = (records.hashes.nbytes + records.descriptors.nbytes + records.split.nbytes + records.label.nbytes
                     + records.part.nbytes + records.index.nbytes) / n
        assert per_image <= 160
        assert Path(records.thumb_path).stat().st_size == n * 64  # thumbnails live on disk
    finally:
        records.close()
    assert records.thumb_path is None


def test_an_open_set_is_audited_on_its_labeled_classes(compose_cfg, tmp_path):
    data = data_config(compose_cfg("audit", ["data.open_set=[0,1,2,3,4,5]", "data.num_labels=24"]))
    result = audit(data, tmp_path / "out", AuditOptions())
    balance = result["class_balance"]
    assert set(balance["test"]["counts"]) == {"0", "1", "2", "3", "4", "5"} and balance["test"]["unseen"] > 0
    assert result["label_check"]["checked"] <= sum(b["total"] for b in balance.values())
