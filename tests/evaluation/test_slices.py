"""Slice accuracy with its significance test, confidence buckets, subfolder and CSV slices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control, fisher_exact

from ssl_train.errors import SSLTrainError
from ssl_train.evaluation.slices import UNMAPPED, confidence_buckets, csv_slices, slice_accuracy, subfolder_slices


def test_a_planted_bad_slice_is_flagged_and_a_fair_one_is_not():
    rng = np.random.default_rng(0)
    groups = np.array(["bad"] * 100 + ["x"] * 300 + ["y"] * 300)
    correct = np.r_[rng.random(100) < 0.6, rng.random(600) < 0.9]
    rows = {r["slice"]: r for r in slice_accuracy(correct, groups)}
    assert rows["bad"]["flagged"] and not rows["x"]["flagged"] and not rows["y"]["flagged"]
    assert [r["slice"] for r in slice_accuracy(correct, groups)][0] == "bad"  # worst first


def test_p_and_q_values_are_fisher_and_benjamini_hochberg():
    groups = np.array(["a"] * 20 + ["b"] * 30 + ["c"] * 50)
    correct = np.r_[np.arange(20) < 12, np.arange(30) < 27, np.arange(50) < 45]
    rows = {r["slice"]: r for r in slice_accuracy(correct, groups, alpha=0.05)}
    # slice a: 12/20 correct against 72/80 in the rest, one-sided (slice worse)
    assert rows["a"]["p_value"] == pytest.approx(fisher_exact([[12, 8], [72, 8]], alternative="less")[1])
    assert rows["a"]["acc"] == 0.6 and rows["a"]["rest_acc"] == 0.9
    p = [rows[k]["p_value"] for k in "abc"]
    assert [rows[k]["q_value"] for k in "abc"] == pytest.approx(false_discovery_control(p, method="bh"))


def test_a_slice_better_than_the_rest_is_never_flagged():
    groups = np.array(["good"] * 50 + ["rest"] * 50)
    correct = np.r_[np.ones(50, bool), np.arange(50) < 25]
    assert not any(r["flagged"] for r in slice_accuracy(correct, groups) if r["slice"] == "good")


def test_confidence_buckets_by_hand():
    conf = np.array([0.2, 0.55, 0.6, 0.95, 1.0, 0.999])
    correct = np.array([0, 1, 0, 1, 1, 1], bool)
    rows = confidence_buckets(conf, correct)
    assert [r["samples"] for r in rows] == [1, 2, 0, 1, 2]
    assert rows[1]["acc"] == 0.5 and rows[1]["confidence"] == pytest.approx(0.575)
    assert rows[2]["acc"] is None and rows[-1]["bucket"] == "[0.99, 1]"


def test_subfolder_slices(tmp_path):
    paths = [tmp_path / "test/cat/indoor/1.png", tmp_path / "test/dog/2.png", tmp_path / "labeled/cat/a/b/3.png"]
    assert subfolder_slices(paths, ["cat", "dog", "cat"]) == ["indoor", "(class folder)", "a/b"]
    with pytest.raises(SSLTrainError, match="not in a class folder"):
        subfolder_slices([tmp_path / "elsewhere/4.png"], ["cat"])


def test_csv_slices_match_relative_absolute_and_in_memory_names(tmp_path):
    root = tmp_path / "data"
    ids = [str(root / "test/cat/1.png"), str(root / "test/dog/2.png"), "train[7]", str(root / "test/dog/9.png")]
    csv = tmp_path / "meta.csv"
    csv.write_text(f"file,site\ntest/cat/1.png,north\n{root / 'test/dog/2.png'},south\ntrain[7],north\n")
    assert csv_slices(ids, csv, "site", root=root) == ["north", "south", "north", UNMAPPED]
    with pytest.raises(SSLTrainError, match="no column 'region'"):
        csv_slices(ids, csv, "region", root=root)
    with pytest.raises(SSLTrainError, match="no such file"):
        csv_slices(ids, tmp_path / "missing.csv", "site")
