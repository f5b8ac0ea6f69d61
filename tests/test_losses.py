import math

import pytest
import torch
import torch.nn.functional as F

from ssl_train import losses


def test_fixmatch_loss_masks_and_averages_over_all_unlabeled_samples():
    # weak view: sample 0 confident in class 1 (p≈0.98), sample 1 not confident
    logits_weak = torch.tensor([[0.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
    logits_strong = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 0.0]])
    loss, mask, labels = losses.fixmatch_loss(logits_weak.softmax(-1), logits_strong, threshold=0.95)
    assert mask.tolist() == [1.0, 0.0]
    assert labels[0].item() == 1
    ce0 = -math.log(math.exp(2) / (math.exp(1) + math.exp(2) + math.exp(3)))
    assert loss.item() == pytest.approx(ce0 / 2)  # divided by all 2 samples, not the 1 confident one


def test_fixmatch_loss_no_gradient_through_the_weak_view():
    weak = torch.tensor([[0.0, 9.0]], requires_grad=True)
    strong = torch.tensor([[0.5, 0.0]], requires_grad=True)
    loss, _, _ = losses.fixmatch_loss(weak.softmax(-1), strong, 0.5)
    loss.backward()
    assert weak.grad is None and strong.grad is not None and strong.grad.abs().sum() > 0


def test_confidence_threshold_is_inclusive():
    logits = torch.log(torch.tensor([[0.95, 0.05]]))
    assert losses.confident_pseudo_labels(logits, 0.95)[1].item() == pytest.approx(1.0)


def test_one_alignment_iteration_from_zero_is_remixmatch_ratio():
    probs = torch.tensor([[0.6, 0.4], [0.9, 0.1]])  # mean (0.75, 0.25): the model over-predicts class 0
    log_weights = losses.balance_log_weights(probs, torch.tensor([0.5, 0.5]), torch.zeros(2), iterations=1)
    # row 0: (0.6/0.75, 0.4/0.25) = (0.8, 1.6) -> (1/3, 2/3); row 1: (1.2, 0.4) -> (0.75, 0.25)
    torch.testing.assert_close(losses.aligned_probs(probs, log_weights), torch.tensor([[1 / 3, 2 / 3], [0.75, 0.25]]))
    assert log_weights.sum().abs() < 1e-6  # centered


def test_alignment_iterations_reach_the_target_marginal_where_one_step_does_not():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(6 * torch.randn(500, 4, generator=g) + torch.tensor([3.0, 0, 0, 0]), -1)  # confident, skewed
    target = torch.full((4,), 0.25)
    marginal = lambda w: losses.aligned_probs(probs, w).mean(0)  # noqa: E731
    one = losses.balance_log_weights(probs, target, torch.zeros(4), iterations=1)
    assert (marginal(one) - target).abs().max() > 0.05
    warm = one
    for _ in range(199):  # warm-started one step at a time, as training does
        warm = losses.balance_log_weights(probs, target, warm, iterations=1)
    torch.testing.assert_close(marginal(warm), target, atol=1e-3, rtol=0)
    torch.testing.assert_close(losses.balance_log_weights(probs, target, torch.zeros(4), 200), warm)


def test_softmax_mse_hand_value_and_detached_target():
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)  # softmax = (0.75, 0.25)
    loss = losses.softmax_mse(student, target)
    assert loss.item() == pytest.approx(((0.5 - 0.75) ** 2 + (0.5 - 0.25) ** 2) / 2)
    loss.backward()
    assert target.grad is None and student.grad.abs().sum() > 0


def test_distillation_loss_matches_hand_computation():
    zs, zt, y = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([1])
    T, alpha = 2.0, 0.7
    ps, pt = F.softmax(zs / T, -1), F.softmax(zt / T, -1)
    kl = (pt * (pt.log() - ps.log())).sum().item()
    ce = -F.log_softmax(zs, -1)[0, 1].item()
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert losses.distillation_loss(zs, zt, y, T, alpha).item() == pytest.approx(expected, rel=1e-5)


def test_rampups():
    assert losses.sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert losses.sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert losses.sigmoid_rampup(100, 100) == 1.0 and losses.sigmoid_rampup(500, 100) == 1.0
    assert losses.linear_rampup(25, 100) == 0.25 and losses.linear_rampup(7, 0) == 1.0


def test_ema_decay_warmup():
    assert losses.ema_decay(0, 0.999) == 0.0  # first update copies the model
    assert losses.ema_decay(9, 0.999) == pytest.approx(0.9)
    assert losses.ema_decay(10**6, 0.999) == 0.999


def test_cosine_schedule_is_fixmatch_7_16():
    assert losses.cosine_lr_factor(0, 1000) == 1.0
    assert losses.cosine_lr_factor(1000, 1000) == pytest.approx(math.cos(7 * math.pi / 16))
    assert losses.cosine_lr_factor(500, 1000) == pytest.approx(math.cos(7 * math.pi / 32))
