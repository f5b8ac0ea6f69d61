"""The alignment parts on tiny tensors: RatioAlignment by hand and against USB's DistAlignEMAHook, transcribed
(semilearn/algorithms/hooks/dist_align.py); DistributionAlignment's target and window here, its Sinkhorn weights
in tests/test_losses.py and inside FixMatch in tests/algorithms/test_algorithms.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ssl_train.algorithms.alignment import DistributionAlignment, RatioAlignment
from ssl_train.errors import SSLTrainError
from ssl_train.losses import label_shift_prior

PROBS = torch.tensor([[0.6, 0.4], [0.9, 0.1]])  # mean (0.75, 0.25)
PROBS2 = torch.tensor([[0.2, 0.8], [0.4, 0.6]])  # mean (0.3, 0.7)


def normalized(rows) -> torch.Tensor:
    rows = torch.tensor(rows, dtype=torch.float32)
    return rows / rows.sum(dim=-1, keepdim=True)


def with_prior(prior) -> SimpleNamespace:
    """What `bind` reads from a data module here: the labeled class frequencies."""
    return SimpleNamespace(labeled_class_prior=lambda: torch.tensor(prior))


def test_ratio_alignment_uniform_copies_the_first_mean_then_follows_its_ema():
    part = RatioAlignment(2, momentum=0.5, target="uniform")
    # First update: p̄ = the batch mean (0.75, 0.25); p · 0.5 / p̄: (0.8, 1.6) and (1.2, 0.4), renormalized.
    torch.testing.assert_close(part(PROBS), normalized([[0.8, 1.6], [1.2, 0.4]]))
    torch.testing.assert_close(part.model_mean, torch.tensor([0.75, 0.25]))
    # Then the EMA: p̄ = 0.5 · (0.75, 0.25) + 0.5 · (0.3, 0.7) = (0.525, 0.475).
    torch.testing.assert_close(part(PROBS2), normalized([[0.2 / 0.525, 0.8 / 0.475], [0.4 / 0.525, 0.6 / 0.475]]))
    torch.testing.assert_close(part.model_mean, torch.tensor([0.525, 0.475]))
    assert int(part.updates) == 2
    part.bind(with_prior([0.2, 0.8]))  # a uniform target ignores the labeled frequencies
    torch.testing.assert_close(part.target, torch.tensor([0.5, 0.5]))


def test_ratio_alignment_labeled_aligns_to_the_labeled_class_frequencies():
    part = RatioAlignment(2, momentum=0.5, target="labeled")
    part.bind(with_prior([0.2, 0.8]))
    # p · (0.2, 0.8) / (0.75, 0.25): (0.16, 1.28) and (0.24, 0.32).
    torch.testing.assert_close(part(PROBS), normalized([[0.16, 1.28], [0.24, 0.32]]))
    part = RatioAlignment(3, target="labeled")
    part.bind(with_prior([0.5, 0.5, 0.0]))  # a class never labeled keeps a tiny share, so nothing divides by 0
    assert 0 < part.target[2] < 1e-5 and torch.isfinite(part(torch.full((2, 3), 1 / 3))).all()


def test_ratio_alignment_predictions_follows_the_labeled_predictions_from_uniform():
    part = RatioAlignment(2, momentum=0.5, target="predictions")
    probs_lb = torch.tensor([[1.0, 0.0], [0.6, 0.4]])  # mean (0.8, 0.2)
    # The target is an EMA from uniform (not a copy): 0.5 · (0.5, 0.5) + 0.5 · (0.8, 0.2) = (0.65, 0.35).
    aligned = part(PROBS, probs_lb=probs_lb)
    torch.testing.assert_close(part.target, torch.tensor([0.65, 0.35]))
    torch.testing.assert_close(aligned, normalized([[0.6 * 0.65 / 0.75, 0.4 * 0.35 / 0.25],
                                                    [0.9 * 0.65 / 0.75, 0.1 * 0.35 / 0.25]]))
    with pytest.raises(SSLTrainError, match="algorithm.alignment.target=predictions needs the labeled batch"):
        part(PROBS)


class USBDistAlignEMA:
    """DistAlignEMAHook (semilearn/algorithms/hooks/dist_align.py), transcribed for one process."""

    def __init__(self, num_classes, momentum=0.999, p_target_type="uniform", p_target=None):
        self.m = momentum
        self.update_p_target = p_target_type == "model"
        self.p_target = torch.ones((num_classes,)) / num_classes if p_target_type != "gt" else p_target
        self.p_model = None

    def dist_align(self, probs_x_ulb, probs_x_lb=None):
        if self.p_model is None:
            self.p_model = torch.mean(probs_x_ulb, dim=0)
        else:
            self.p_model = self.p_model * self.m + torch.mean(probs_x_ulb, dim=0) * (1 - self.m)
        if self.update_p_target:
            self.p_target = self.p_target * self.m + torch.mean(probs_x_lb, dim=0) * (1 - self.m)
        aligned = probs_x_ulb * (self.p_target + 1e-6) / (self.p_model + 1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("ours, theirs", [("uniform", "uniform"), ("labeled", "gt"), ("predictions", "model")])
def test_ratio_alignment_follows_usb_dist_align_ema(ours, theirs):
    g = torch.Generator().manual_seed(0)
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4])
    part, usb = RatioAlignment(4, momentum=0.9, target=ours), USBDistAlignEMA(4, 0.9, theirs, prior)
    part.bind(with_prior(prior.tolist()))
    for _ in range(5):
        probs, probs_lb = ((3 * torch.randn(n, 4, generator=g)).softmax(-1) for n in (16, 8))
        torch.testing.assert_close(part(probs, probs_lb=probs_lb), usb.dist_align(probs, probs_lb))
        torch.testing.assert_close(part.model_mean, usb.p_model)
        torch.testing.assert_close(part.target, usb.p_target)


def test_a_restored_ratio_alignment_averages_instead_of_copying_again():
    """The update count is on the host (no device sync for the first-update test) and comes back with a
    checkpoint: the restored part's next update is the EMA, as the uninterrupted part's is."""
    whole = RatioAlignment(2, momentum=0.5)
    whole(PROBS)
    restored = RatioAlignment(2, momentum=0.5)
    restored.load_state_dict(whole.state_dict())
    assert restored._updates == 1
    torch.testing.assert_close(restored(PROBS2), whole(PROBS2), rtol=0, atol=0)
    torch.testing.assert_close(restored.model_mean, torch.tensor([0.525, 0.475]))


def test_distribution_alignment_target_is_the_labeled_prior_when_the_data_knows_it():
    part = DistributionAlignment(3, window=4)
    part.bind(SimpleNamespace())  # a data module without labeled class frequencies: uniform
    torch.testing.assert_close(part.target, torch.full((3,), 1 / 3))
    part.bind(with_prior([0.25, 0.75, 0.0]))  # a class never labeled keeps a tiny share
    assert 0 < part.target[2] < 1e-5
    torch.testing.assert_close(part.target, torch.tensor([0.25, 0.75, 0.0]), atol=1e-6, rtol=0)


def test_label_shift_prior_inverts_the_confusion_matrix():
    confusion = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]])
    prior = torch.tensor([0.6, 0.3, 0.1])
    torch.testing.assert_close(label_shift_prior(confusion, confusion.T @ prior), prior, atol=1e-5, rtol=0)
    noisy = label_shift_prior(confusion, torch.tensor([0.9, 0.1, 0.0]))  # no mix gives it exactly: the nearest
    assert (noisy >= 0).all() and abs(float(noisy.sum()) - 1) < 1e-6 and noisy[0] > 0.9


def test_pool_target_is_reestimated_from_each_validation_pass():
    part = DistributionAlignment(2, window=64, target="pool")
    part.bind(with_prior([0.5, 0.5]))
    # the validation split: class 0 predicted 0.9 / 0.1, class 1 predicted 0.2 / 0.8
    part.observe_validation(normalized([[9, 1], [9, 1], [2, 8]]), torch.tensor([0, 0, 1]))
    part.observe_validation(normalized([[2, 8]]), torch.tensor([1]))
    part(torch.tensor([[0.9, 0.1]] * 3 + [[0.2, 0.8]]))  # a pool of three 0s to one 1: mean (0.725, 0.275)
    torch.testing.assert_close(part.target, torch.tensor([0.5, 0.5]))  # until the pass ends
    part.end_validation()
    torch.testing.assert_close(part.target, torch.tensor([0.75, 0.25]), atol=1e-5, rtol=0)
    assert not part.confusion.any()  # the next pass starts afresh
    labeled = DistributionAlignment(2, window=64)
    labeled.bind(with_prior([0.5, 0.5]))
    labeled.observe_validation(normalized([[9, 1]]), torch.tensor([0]))
    labeled(torch.tensor([[0.9, 0.1]]))
    labeled.end_validation()
    torch.testing.assert_close(labeled.target, torch.tensor([0.5, 0.5]))


def test_distribution_alignment_window_shorter_than_a_batch_keeps_its_last_rows():
    part = DistributionAlignment(2, window=3)
    probs = normalized([[1, 1], [1, 2], [1, 3], [1, 4], [1, 5]])
    aligned = part(probs)
    torch.testing.assert_close(part.window, probs[2:])
    assert part._seen == int(part.seen) == 3 and aligned.shape == probs.shape
    torch.testing.assert_close(aligned.sum(-1), torch.ones(5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device syncs exist only with a device")
@pytest.mark.parametrize("target", RatioAlignment.TARGETS)
def test_ratio_alignment_never_waits_for_the_device(target, never_waits):
    part = RatioAlignment(2, target=target).cuda()
    never_waits(lambda: part(PROBS2.cuda(), probs_lb=PROBS.cuda()))


@pytest.mark.parametrize("build, message", [
    (lambda: RatioAlignment(2, target="gt"),
     "algorithm.alignment.target='gt': expected one of ['uniform', 'labeled', 'predictions']"),
    (lambda: RatioAlignment(2, momentum=1.5), "algorithm.alignment.momentum=1.5: expected a number in [0, 1]"),
    (lambda: DistributionAlignment(2, iterations=0), "algorithm.alignment.iterations=0: expected an integer >= 1"),
    (lambda: DistributionAlignment(2, target="uniform"),
     "algorithm.alignment.target='uniform': expected one of ['labeled', 'pool']"),
])
def test_a_bad_alignment_option_is_one_line_naming_the_key(build, message):
    with pytest.raises(SSLTrainError) as caught:
        build()
    assert str(caught.value) == message
