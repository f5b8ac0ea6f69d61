"""ECE/MCE, reliability bins and temperature scaling against hand computations, torchmetrics and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from ssl_train.calibration import (
    calibration_errors,
    expected_calibration_error,
    fit_temperature,
    fold_temperature,
    nll,
    reliability_bins,
)
from ssl_train.errors import SSLTrainError
from ssl_train.models.classifier import Classifier
from ssl_train.models.cnn import SmallCNN


def test_ece_and_mce_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.65 (right), 0.65 (right): with 15 bins, bin 13 holds the 0.9s
    # (accuracy 0.5, gap 0.4) and bin 9 the 0.65s (accuracy 1.0, gap 0.35): ECE = 0.375, MCE = 0.4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.65, 0.35], [0.35, 0.65]])
    labels = torch.tensor([0, 1, 0, 1])
    errors = calibration_errors(probs, labels, bins=15)
    assert errors["ece"] == pytest.approx(0.375, abs=1e-6) and errors["mce"] == pytest.approx(0.4, abs=1e-6)
    # 0.9 right twice (gap 0.1), 0.65 wrong (gap 0.65): ECE = (2·0.1 + 0.65)/3, MCE = 0.65
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.65, 0.35]])
    errors = calibration_errors(probs, torch.tensor([0, 0, 1]), bins=15)
    assert errors["ece"] == pytest.approx(0.85 / 3, abs=1e-6) and errors["mce"] == pytest.approx(0.65, abs=1e-6)


def test_reliability_bins_reproduce_torchmetrics_ece():
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2000, 5, generator=gen)
    labels = torch.where(torch.rand(2000, generator=gen) < 0.6, logits.argmax(-1), torch.randint(0, 5, (2000,),
                                                                                                     generator=gen))
    probs = logits.softmax(-1)
    conf, pred = probs.max(-1)
    bins = reliability_bins(conf.numpy(), (pred == labels).numpy(), 15)
    assert sum(b["count"] for b in bins) == 2000
    ece = sum(b["count"] / 2000 * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    mce = max(abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    errors = calibration_errors(probs, labels, 15)
    assert ece == pytest.approx(errors["ece"], abs=1e-5) and mce == pytest.approx(errors["mce"], abs=1e-5)


def test_fitted_temperature_minimizes_the_nll_like_scipy():
    gen = torch.Generator().manual_seed(1)
    true_logits = 2 * torch.randn(1500, 4, generator=gen)
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    overconfident = 2.5 * true_logits  # the right temperature is about 2.5
    t = fit_temperature(overconfident, labels)
    reference = minimize_scalar(lambda v: nll(overconfident, labels, v), bounds=(0.05, 20), method="bounded",
                                options={"xatol": 1e-8}).x
    assert t == pytest.approx(reference, rel=1e-3)
    assert 2.0 < t < 3.0
    assert nll(overconfident, labels, t) < nll(overconfident, labels)
    scaled = calibration_errors((overconfident / t).softmax(-1), labels)["ece"]
    assert scaled < calibration_errors(overconfident.softmax(-1), labels)["ece"]


def test_folded_temperature_divides_the_logits_exactly():
    torch.manual_seed(0)
    net = Classifier(SmallCNN((1, 8, 8), 10, widths=(4, 8, 8)), [0.3], [0.2]).eval()
    x = torch.rand(6, 1, 8, 8)
    folded = fold_temperature(net, 1.7)
    torch.testing.assert_close(folded(x), net(x) / 1.7)
    torch.testing.assert_close(net(x).argmax(-1), folded(x).argmax(-1))
    with pytest.raises(SSLTrainError):
        fold_temperature(net, 0.0)
    with pytest.raises(SSLTrainError, match="no linear 'head'"):
        fold_temperature(torch.nn.Sequential(torch.nn.Flatten()), 2.0)


def test_nll_is_cross_entropy():
    logits, labels = torch.randn(10, 3), torch.randint(0, 3, (10,))
    assert nll(logits, labels, 2.0) == pytest.approx(float(F.cross_entropy(logits / 2.0, labels)), rel=1e-6)
    assert np.isfinite(nll(logits, labels))


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=3.0, size=(4000, 5))
    probs = torch.tensor(logits / 2.0).softmax(1).numpy()
    labels = np.array([rng.choice(5, p=p) for p in probs])
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.08)


def test_expected_calibration_error_by_hand():
    confidence = np.array([0.95, 0.95, 0.55, 0.65])
    correct = np.array([1, 0, 1, 1])
    # Bins of width 1/15: {0.95, 0.95} → |0.5 − 0.95|; {0.55} → |1 − 0.55|; {0.65} → |1 − 0.65|.
    expected = (2 * 0.45 + 0.45 + 0.35) / 4
    assert expected_calibration_error(confidence, correct) == pytest.approx(expected)
