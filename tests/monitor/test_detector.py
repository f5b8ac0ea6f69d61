"""The decision on small synthetic cases (fixed seeds): false alarms, detection, streaming, windows, retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_train.errors import SSLTrainError
from ssl_train.monitor.detector import TESTS, Monitor, MonitorOptions
from ssl_train.monitor.inputs import Inputs

FAST = {"permutations": 200}


def test_same_distribution_windows_rarely_alarm(images, synthetic_profile):
    monitor = Monitor(synthetic_profile, MonitorOptions(**FAST))
    alarms = [monitor.check(images(150, seed=100 + i)[0], index=i)[0]["drift"] for i in range(40)]
    assert sum(alarms) <= 5  # alpha = 5% family-wise, over draws of the window for one fixed reference


@pytest.mark.parametrize("shift, tests", [(0.12, {"embedding_mmd", "embedding_ks"}), (0.0, {"predicted_classes"})])
def test_shifted_windows_are_detected_by_the_tests_that_should_see_them(images, synthetic_profile, shift, tests):
    monitor = Monitor(synthetic_profile, MonitorOptions(**FAST))
    for i in range(5):
        x, y = images(300, seed=200 + i, shift=shift)
        if not shift:  # prior shift: keep the darkest class only
            x = x[y == 0]
        result, _ = monitor.check(x, index=i)
        assert result["drift"] and tests <= set(result["drifting_tests"]), result["drifting_tests"]
        assert result["tests"]["embedding_ks"]["components"] == 9  # 8 principal components + residual


def test_result_shape_and_bonferroni_threshold(images, synthetic_profile):
    result, plot = Monitor(synthetic_profile, MonitorOptions(alpha=0.1, **FAST)).check(images(100, 5)[0])
    assert set(result["tests"]) == set(TESTS)
    for test in result["tests"].values():
        assert test["threshold"] == pytest.approx(0.025) and test["drift"] == (test["p_value"] <= 0.025)
    assert result["drift"] == any(t["drift"] for t in result["tests"].values())
    assert 0 <= result["estimated_accuracy"] <= 1 and result["samples"] == 100
    assert sum(result["class_priors"]["estimated"].values()) == pytest.approx(1, abs=1e-5)
    assert plot["embeddings"].shape == (100, 2)


def test_streaming_in_chunks_gives_the_in_memory_result(images, synthetic_profile, tmp_path):
    x, _ = images(230, seed=7, shift=0.05)
    np.save(tmp_path / "x.npy", x.numpy())
    whole, _ = Monitor(synthetic_profile, MonitorOptions(**FAST)).check(x)
    streamed, _ = Monitor(synthetic_profile, MonitorOptions(batch_size=17, **FAST)).run(
        Inputs(tmp_path / "x.npy", synthetic_profile.input_shape))
    for name in TESTS:
        assert streamed["tests"][name]["p_value"] == pytest.approx(whole["tests"][name]["p_value"], rel=1e-9)
    assert streamed["estimated_accuracy"] == pytest.approx(whole["estimated_accuracy"], rel=1e-9)
    assert streamed["predicted_class_distribution"] == whole["predicted_class_distribution"]
    assert streamed["input_channels"]["mean"] == pytest.approx(whole["input_channels"]["mean"])


def test_a_window_larger_than_the_reservoir_keeps_exact_counts_and_a_bounded_sample(images, synthetic_profile):
    x, _ = images(600, seed=8)
    monitor = Monitor(synthetic_profile, MonitorOptions(reservoir=64, mmd_samples=32, batch_size=100, **FAST))
    stats = monitor.new_window()
    for start in range(0, 600, 100):
        stats.add(monitor.outputs(x[start:start + 100]))
    assert stats.n == 600 and int(stats.predicted_counts.sum()) == 600 and len(stats.sample) == 64
    result, _ = monitor.decide(stats)
    assert result["tests"]["embedding_ks"]["samples"][1] == 64 and result["tests"]["embedding_mmd"]["samples"][1] == 32
    assert result["tests"]["confidence_psi"]["p_value"] > 0.0125  # the exact totals: no shift


def test_sliding_windows_time_series(images, synthetic_profile, tmp_path):
    same, _ = images(300, seed=9)
    shifted, _ = images(300, seed=10, shift=0.15)
    np.save(tmp_path / "stream.npy", torch.cat([same, shifted]).numpy())
    inputs = Inputs(tmp_path / "stream.npy", synthetic_profile.input_shape)
    report, _ = Monitor(synthetic_profile, MonitorOptions(window=100, batch_size=64, **FAST)).run(inputs)
    windows = report["windows"]
    assert [(w["start"], w["end"]) for w in windows] == [(k * 100, k * 100 + 100) for k in range(6)]
    assert [w["drift"] for w in windows[3:]] == [True] * 3 and sum(w["drift"] for w in windows[:3]) <= 1
    assert report["windows_summary"]["first_drift"] <= 3 and report["windows_summary"]["incomplete_tail_samples"] == 0
    sliding = MonitorOptions(window=120, stride=50, batch_size=64, **FAST)
    overlapping, _ = Monitor(synthetic_profile, sliding).run(inputs)
    assert [(w["start"], w["end"]) for w in overlapping["windows"]] == [(k * 50, k * 50 + 120) for k in range(10)]
    assert overlapping["windows_summary"]["incomplete_tail_samples"] == 30
    assert all(w["samples"] == 120 for w in overlapping["windows"])


def test_several_paths_are_one_window_each(images, synthetic_profile, tmp_path):
    for i, shift in enumerate((0.0, 0.2)):
        np.save(tmp_path / f"day{i}.npy", images(120, seed=20 + i, shift=shift)[0].numpy())
    inputs = Inputs([tmp_path / "day0.npy", tmp_path / "day1.npy"], synthetic_profile.input_shape)
    report, _ = Monitor(synthetic_profile, MonitorOptions(batch_size=50, **FAST)).run(inputs)
    assert [w["source"] for w in report["windows"]] == [str(tmp_path / "day0.npy"), str(tmp_path / "day1.npy")]
    assert [w["drift"] for w in report["windows"]] == [False, True] and report["samples"] == 240


def test_retrain_recommendation_follows_the_thresholds(images, synthetic_profile):
    x, _ = images(200, seed=11, shift=0.2)
    strict, _ = Monitor(synthetic_profile, MonitorOptions(min_severity=0.25, **FAST)).check(x)
    assert strict["drift"] and strict["retrain_recommended"]
    assert any("tests detect drift" in r for r in strict["retrain_reasons"])
    lenient, _ = Monitor(synthetic_profile, MonitorOptions(min_severity=1.01, max_psi=1e9, max_accuracy_drop=1.0,
                                                           **FAST)).check(x)
    assert lenient["drift"] and not lenient["retrain_recommended"] and lenient["retrain_reasons"] == []
    calm, _ = Monitor(synthetic_profile, MonitorOptions(max_accuracy_drop=-1.0, **FAST)).check(x)
    assert any("below validation" in r for r in calm["retrain_reasons"])


@pytest.mark.parametrize("options, message", [
    ({"alpha": 0}, "monitor.alpha=0"),
    ({"permutations": 0}, "monitor.permutations=0"),
    ({"window": 1}, "monitor.window=1"),
    ({"stride": 5}, "monitor.stride needs monitor.window"),
])
def test_bad_options(options, message):
    with pytest.raises(SSLTrainError, match=message):
        MonitorOptions(**options)


def test_too_few_samples_for_a_window(images, synthetic_profile, tmp_path):
    np.save(tmp_path / "x.npy", images(50, seed=12)[0].numpy())
    inputs = Inputs(tmp_path / "x.npy", synthetic_profile.input_shape)
    with pytest.raises(SSLTrainError, match="fewer than one window"):
        Monitor(synthetic_profile, MonitorOptions(window=100)).run(inputs)
    np.save(tmp_path / "one.npy", images(1, seed=12)[0].numpy())
    with pytest.raises(SSLTrainError, match="at least 2"):
        Monitor(synthetic_profile).run(Inputs(tmp_path / "one.npy", synthetic_profile.input_shape))
