"""The masking parts against hand computations and against USB's reference code, transcribed here loop for loop.

Our parts keep the state USB keeps but update it without host syncs (FlexMatch's `Counter` of the selected labels
is a `scatter_add`, FreeMatch's histogram a weighted `scatter_add`); the transcriptions below (from
microsoft/Semi-supervised-learning, semilearn/algorithms/<name>/utils.py and freematch.py's `entropy_loss`) are
run on the same batches and their state and masks compared with ours.
"""

from __future__ import annotations

import math
from collections import Counter
from copy import deepcopy
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ssl_train import losses
from ssl_train.algorithms.masking import (
    CurriculumThreshold,
    FixedThreshold,
    RelativeThreshold,
    SelfAdaptiveThreshold,
    TruncatedGaussian,
)
from ssl_train.cli import instantiation_message
from ssl_train.errors import SSLTrainError
from ssl_train.models.classifier import Classifier
from ssl_train.models.mlp import MLP
from ssl_train.run.config import compose


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def random_probs(g: torch.Generator, n: int, classes: int, sharpness: float = 3.0) -> torch.Tensor:
    return (sharpness * torch.randn(n, classes, generator=g)).softmax(-1)


def curriculum(pool: int, classes: int, **options) -> CurriculumThreshold:
    part = CurriculumThreshold(classes, **options)
    part.bind(SimpleNamespace(unlabeled=range(pool)))  # bind reads only the unlabeled pool's size
    return part


# ---------------------------------------------------------------- FixMatch


def test_fixed_threshold_is_inclusive_and_stateless():
    probs = t([[0.95, 0.05], [0.94, 0.06], [0.2, 0.8]])
    assert FixedThreshold(2).forward(probs).tolist() == [1.0, 0.0, 0.0]
    assert FixedThreshold(2, threshold=0.8).forward(probs).tolist() == [1.0, 1.0, 1.0]
    assert not dict(FixedThreshold(2).named_buffers())


# ---------------------------------------------------------------- FlexMatch

# Step 1 (idx 0-3) selects samples 0 and 1 as class 0 and sample 2 as class 1 (confidence >= 0.9); sample 3
# (0.5) stays unselected. Pool of 8: counts -1: 5, class 0: 2, class 1: 1, class 2: 0.
FLEX_STEP1 = (torch.tensor([0, 1, 2, 3]), t([[0.95, 0.03, 0.02], [0.92, 0.05, 0.03], [0.04, 0.91, 0.05],
                                            [0.50, 0.30, 0.20]]))
# Step 2: confidences 0.70 (class 0), 0.42 (1), 0.92 (2, selected), 0.96 (1, selected again), 0.34 (0).
FLEX_STEP2 = (torch.tensor([3, 4, 5, 2, 6]), t([[0.70, 0.20, 0.10], [0.25, 0.42, 0.33], [0.03, 0.05, 0.92],
                                               [0.02, 0.96, 0.02], [0.34, 0.33, 0.33]]))
# Step 3: sample 0 is now confidently class 2 (relabeled); sample 1 is not confident and keeps its class 0.
FLEX_STEP3 = (torch.tensor([0, 1]), t([[0.01, 0.01, 0.98], [0.30, 0.60, 0.10]]))


@pytest.mark.parametrize("warmup, mapping, beta1, weights2", [
    # β after step 1, warm-up: counts / max(count of unused = 5, 2, 1) = (2/5, 1/5, 0); thresholds 0.9·M(β):
    # convex M(x) = x/(2-x): (0.225, 0.1, 0) -> every step-2 sample passes; linear M(x) = x: (0.36, 0.18, 0).
    (True, "convex", [2 / 5, 1 / 5, 0], [1, 1, 1, 1, 1]),
    (True, "linear", [2 / 5, 1 / 5, 0], [1, 1, 1, 1, 0]),  # 0.34 < 0.36
    # Without warm-up: counts / max class count 2 = (1, 1/2, 0); convex (0.9, 0.3, 0), linear (0.9, 0.45, 0).
    (False, "convex", [1, 1 / 2, 0], [0, 1, 1, 1, 0]),
    (False, "linear", [1, 1 / 2, 0], [0, 0, 1, 1, 0]),  # 0.42 < 0.45
])
def test_curriculum_threshold_hand_computed_over_three_steps(warmup, mapping, beta1, weights2):
    """Linear is the paper's M(x) = x (USB implements only the convex mapping; its commented-out "linear" line
    is (x + 1) / 2)."""
    part = curriculum(8, 3, threshold=0.9, warmup=warmup, mapping=mapping)
    assert part.selected.tolist() == [-1] * 8 and part.learning_effect.tolist() == [0, 0, 0]

    idx, probs = FLEX_STEP1
    assert part(probs, idx=idx).tolist() == [1, 1, 1, 1]  # β = 0: every threshold is 0 at the start
    assert part.selected.tolist() == [0, 0, 1, -1, -1, -1, -1, -1]
    torch.testing.assert_close(part.learning_effect, t(beta1))

    idx, probs = FLEX_STEP2
    assert part(probs, idx=idx).tolist() == weights2
    assert part.selected.tolist() == [0, 0, 1, -1, -1, 2, -1, -1]  # counts -1: 4, 0: 2, 1: 1, 2: 1
    torch.testing.assert_close(part.learning_effect, t([2 / 4, 1 / 4, 1 / 4] if warmup else [1, 1 / 2, 1 / 2]))

    idx, probs = FLEX_STEP3
    part(probs, idx=idx)
    assert part.selected.tolist() == [2, 0, 1, -1, -1, 2, -1, -1]  # counts -1: 4, 0: 1, 1: 1, 2: 2
    torch.testing.assert_close(part.learning_effect, t([1 / 4, 1 / 4, 2 / 4] if warmup else [1 / 2, 1 / 2, 1]))


class USBFlexMatch:
    """FlexMatchThresholdingHook (semilearn/algorithms/flexmatch/utils.py), transcribed: a `Counter` of the
    selected labels and a loop over the classes (convex mapping, the only one USB implements)."""

    def __init__(self, ulb_dest_len, num_classes, thresh_warmup, p_cutoff):
        self.ulb_dest_len, self.num_classes, self.thresh_warmup, self.p_cutoff = (ulb_dest_len, num_classes,
                                                                                 thresh_warmup, p_cutoff)
        self.selected_label = torch.ones((ulb_dest_len,), dtype=torch.long) * -1
        self.classwise_acc = torch.zeros((num_classes,))

    def update(self):
        pseudo_counter = Counter(self.selected_label.tolist())
        if max(pseudo_counter.values()) < self.ulb_dest_len:
            if self.thresh_warmup:
                for i in range(self.num_classes):
                    self.classwise_acc[i] = pseudo_counter[i] / max(pseudo_counter.values())
            else:
                wo_negative_one = deepcopy(pseudo_counter)
                if -1 in wo_negative_one.keys():
                    wo_negative_one.pop(-1)
                for i in range(self.num_classes):
                    self.classwise_acc[i] = pseudo_counter[i] / max(wo_negative_one.values())

    def masking(self, probs_x_ulb, idx_ulb):
        max_probs, max_idx = torch.max(probs_x_ulb, dim=-1)
        mask = max_probs.ge(self.p_cutoff * (self.classwise_acc[max_idx] / (2. - self.classwise_acc[max_idx])))
        select = max_probs.ge(self.p_cutoff)
        mask = mask.to(max_probs.dtype)
        if idx_ulb[select == 1].nelement() != 0:
            self.selected_label[idx_ulb[select == 1]] = max_idx[select == 1]
        self.update()
        return mask


@pytest.mark.parametrize("warmup", [True, False])
def test_curriculum_threshold_follows_usb_flexmatch(warmup):
    """Same masks and the same selected labels and class-wise learning effects as USB's Counter loop, step for
    step, over 30 random batches (random indices without repeats within a batch, as a training loader draws).
    USB leaves β unchanged in the one case where every pool sample holds the same label; that never happens here."""
    g = torch.Generator().manual_seed(0)
    ours, usb = curriculum(60, 5, threshold=0.7, warmup=warmup), USBFlexMatch(60, 5, warmup, 0.7)
    for _ in range(30):
        idx, probs = torch.randperm(60, generator=g)[:12], random_probs(g, 12, 5)
        assert torch.equal(ours(probs, idx=idx), usb.masking(probs, idx))
        assert torch.equal(ours.selected, usb.selected_label)
        torch.testing.assert_close(ours.learning_effect, usb.classwise_acc, rtol=1e-6, atol=0)
    assert 0 < (ours.selected >= 0).sum() < 60 and ours.learning_effect.max() > 0  # the comparison saw a curriculum


def test_curriculum_threshold_needs_indices_and_a_bound_pool():
    with pytest.raises(SSLTrainError, match="needs the unlabeled samples' indices and a bound data module"):
        CurriculumThreshold(3)(t([[0.5, 0.3, 0.2]]), idx=torch.tensor([0]))
    with pytest.raises(SSLTrainError, match="needs the unlabeled samples' indices"):
        curriculum(4, 3)(t([[0.5, 0.3, 0.2]]))


def test_curriculum_state_is_sized_by_bind_so_a_checkpoint_of_it_loads():
    """A checkpoint holds one selected label per pool sample: only a bound part (bound in `setup`, before
    Lightning restores) has the buffer that size; a re-bind to the same pool keeps the state."""
    trained = curriculum(8, 3, threshold=0.9)
    idx, probs = FLEX_STEP1
    trained(probs, idx=idx)
    with pytest.raises(RuntimeError, match="size mismatch for selected"):
        CurriculumThreshold(3, threshold=0.9).load_state_dict(trained.state_dict())
    restored = curriculum(8, 3, threshold=0.9)
    restored.load_state_dict(trained.state_dict())
    restored.bind(SimpleNamespace(unlabeled=range(8)))
    assert torch.equal(restored.selected, trained.selected)


# ---------------------------------------------------------------- FreeMatch

SAT_PROBS = t([[0.70, 0.20, 0.10], [0.42, 0.38, 0.20], [0.10, 0.20, 0.70], [0.30, 0.40, 0.30]])


def test_self_adaptive_threshold_hand_computed_first_update():
    part = SelfAdaptiveThreshold(3, momentum=0.5)
    torch.testing.assert_close(part.global_threshold, torch.tensor(1 / 3))  # τ_0 = 1/C, p̃_0 = h̃_0 = uniform
    weights = part(SAT_PROBS)
    tau = 0.5 / 3 + 0.5 * (0.70 + 0.42 + 0.70 + 0.40) / 4  # EMA of the mean top probability: 0.44417
    class_probs = [0.5 / 3 + 0.5 * (0.70 + 0.42 + 0.10 + 0.30) / 4,  # EMA of the mean probabilities
                   0.5 / 3 + 0.5 * (0.20 + 0.38 + 0.20 + 0.40) / 4,
                   0.5 / 3 + 0.5 * (0.10 + 0.20 + 0.70 + 0.30) / 4]
    label_hist = [0.5 / 3 + 0.5 * 2 / 4, 0.5 / 3 + 0.5 * 1 / 4, 0.5 / 3 + 0.5 * 1 / 4]  # argmax: 0, 0, 2, 1
    torch.testing.assert_close(part.global_threshold, torch.tensor(tau))
    torch.testing.assert_close(part.class_probs, t(class_probs))
    torch.testing.assert_close(part.label_hist, t(label_hist))
    # Local thresholds τ·p̃_c / max p̃: class 0 0.444, class 1 0.391, class 2 0.410; sample 1 (0.42, class 0) fails.
    assert weights.tolist() == [1, 0, 1, 1]


class USBFreeMatch:
    """FreeMatchThresholingHook (semilearn/algorithms/freematch/utils.py), transcribed (use_quantile and
    clip_thresh off, their defaults)."""

    def __init__(self, num_classes, momentum):
        self.m = momentum
        self.p_model = torch.ones(num_classes) / num_classes
        self.label_hist = torch.ones(num_classes) / num_classes
        self.time_p = self.p_model.mean()

    def masking(self, probs_x_ulb):
        max_probs, max_idx = torch.max(probs_x_ulb, dim=-1, keepdim=True)
        self.time_p = self.time_p * self.m + (1 - self.m) * max_probs.mean()
        self.p_model = self.p_model * self.m + (1 - self.m) * probs_x_ulb.mean(dim=0)
        hist = torch.bincount(max_idx.reshape(-1), minlength=self.p_model.shape[0]).to(self.p_model.dtype)
        self.label_hist = self.label_hist * self.m + (1 - self.m) * (hist / hist.sum())
        max_probs, max_idx = probs_x_ulb.max(dim=-1)
        mod = self.p_model / torch.max(self.p_model, dim=-1)[0]
        return max_probs.ge(self.time_p * mod[max_idx]).to(max_probs.dtype)


def usb_entropy_loss(mask, logits_s, prob_model, label_hist):
    """freematch.py's `entropy_loss` (the fairness term), transcribed; FreeMatch adds 0 when the mask is empty."""
    if mask.sum() == 0:
        return torch.tensor(0.0)
    mask = mask.bool()
    logits_s = logits_s[mask]
    prob_s = logits_s.softmax(dim=-1)
    _, pred_label_s = torch.max(prob_s, dim=-1)
    hist_s = torch.bincount(pred_label_s, minlength=logits_s.shape[1]).to(logits_s.dtype)
    hist_s = hist_s / hist_s.sum()
    prob_model = prob_model.reshape(1, -1)
    label_hist = label_hist.reshape(1, -1)
    inf_to_zero = lambda v: torch.where(v == float("inf"), 0.0, v)  # noqa: E731 (USB's replace_inf_to_zero)
    mod_prob_model = prob_model * inf_to_zero(1 / label_hist).detach()
    mod_prob_model = mod_prob_model / mod_prob_model.sum(dim=-1, keepdim=True)
    mod_mean_prob_s = prob_s.mean(dim=0, keepdim=True) * inf_to_zero(1 / hist_s).detach()
    mod_mean_prob_s = mod_mean_prob_s / mod_mean_prob_s.sum(dim=-1, keepdim=True)
    return (mod_prob_model * torch.log(mod_mean_prob_s + 1e-12)).sum(dim=1).mean()


def test_self_adaptive_threshold_and_fairness_follow_usb_freematch():
    """Masks, τ, p̃ and h̃ as USB's hook over 5 random batches (momentum 0.9, so the state moves), and the fairness
    penalty = fairness_weight × USB's entropy_loss on those masks, value and gradient."""
    g = torch.Generator().manual_seed(1)
    ours, usb = SelfAdaptiveThreshold(4, momentum=0.9, fairness_weight=0.01), USBFreeMatch(4, 0.9)
    for _ in range(5):
        probs = random_probs(g, 16, 4, sharpness=1.5)
        weights = ours(probs)
        assert torch.equal(weights, usb.masking(probs))
        torch.testing.assert_close(ours.global_threshold, usb.time_p)
        torch.testing.assert_close(ours.class_probs, usb.p_model)
        torch.testing.assert_close(ours.label_hist, usb.label_hist)
        logits = torch.randn(16, 4, generator=g, requires_grad=True)
        penalty = ours.penalty(logits, weights)["fairness"]
        (ours_grad,) = torch.autograd.grad(penalty, logits)
        expected = 0.01 * usb_entropy_loss(weights, logits, usb.p_model, usb.label_hist)
        (usb_grad,) = torch.autograd.grad(expected, logits)
        torch.testing.assert_close(penalty, expected)
        torch.testing.assert_close(ours_grad, usb_grad)
    assert 0 < weights.sum() < 16


def test_fairness_hand_value_empty_mask_and_unpredicted_classes():
    # Masked strong-view probabilities (0.75, 0.25) and (0.25, 0.75): mean (0.5, 0.5), histogram (0.5, 0.5),
    # so b = (0.5, 0.5); a = SumNorm(p̃ / h̃) = SumNorm((0.6, 0.4) / 0.5) = (0.6, 0.4). Σ a log b = log 0.5.
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)], [5.0, 0.0]])
    value = losses.freematch_fairness(logits, t([1, 1, 0]), t([0.6, 0.4]), t([0.5, 0.5]))
    assert value.item() == pytest.approx(math.log(0.5), abs=1e-6)

    # Empty mask: 0, with a zero (not NaN) gradient.
    logits = torch.randn(4, 3, requires_grad=True)
    empty = losses.freematch_fairness(logits, torch.zeros(4), torch.full((3,), 1 / 3), torch.full((3,), 1 / 3))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(logits.grad, torch.zeros(4, 3))
    part = SelfAdaptiveThreshold(3)
    assert part.penalty(logits, torch.zeros(4))["fairness"].item() == 0.0

    # Every masked sample predicts class 0 and the label histogram has a class at 0: weights 0, not ∞; finite.
    logits = torch.tensor([[4.0, 0.0, 0.0], [3.0, 1.0, 0.0], [0.0, 5.0, 0.0]], requires_grad=True)
    value = losses.freematch_fairness(logits, t([1, 1, 0]), t([0.5, 0.3, 0.2]), t([0.6, 0.4, 0.0]))
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(logits.grad).all()
    torch.testing.assert_close(value, usb_entropy_loss(t([1, 1, 0]), logits, t([0.5, 0.3, 0.2]), t([0.6, 0.4, 0])))
    assert SelfAdaptiveThreshold(3, fairness_weight=0.0).penalty(logits, t([1, 1, 0])) == {}


# ---------------------------------------------------------------- SoftMatch

TG_PROBS = t([[0.90, 0.05, 0.03, 0.02], [0.50, 0.20, 0.20, 0.10], [0.30, 0.25, 0.25, 0.20], [0.10, 0.70, 0.10, 0.10]])


def test_truncated_gaussian_hand_computed_over_two_steps():
    part = TruncatedGaussian(4, momentum=0.5, n_sigma=2.0)
    # Top probabilities 0.9, 0.5, 0.3, 0.7: mean 0.6, unbiased variance (0.09 + 0.01 + 0.09 + 0.01) / 3.
    mean, var = 0.5 * 0.25 + 0.5 * 0.6, 0.5 * 1.0 + 0.5 * 0.2 / 3  # μ_0 = 1/C, σ²_0 = 1
    weights = part(TG_PROBS)
    torch.testing.assert_close(part.mean, torch.tensor(mean))
    torch.testing.assert_close(part.var, torch.tensor(var))
    torch.testing.assert_close(weights, t([1, 1, math.exp(-(0.3 - mean) ** 2 / (2 * var / 4)), 1]))

    mean, var = 0.5 * mean + 0.5 * 0.6, 0.5 * var + 0.5 * 0.2 / 3  # 0.5125, 0.3
    weights = part(TG_PROBS)
    torch.testing.assert_close(part.mean, torch.tensor(mean))
    torch.testing.assert_close(part.var, torch.tensor(var))
    gauss = lambda p: math.exp(-(p - mean) ** 2 / (2 * var / 4))  # noqa: E731
    torch.testing.assert_close(weights, t([1, gauss(0.5), gauss(0.3), 1]))  # 0.5 is now below μ
    assert 0.99 < weights[1] < 1 and weights[2] < 0.75


class USBSoftMatch:
    """SoftMatchWeightingHook (semilearn/algorithms/softmatch/utils.py), transcribed (per_class off, its default)."""

    def __init__(self, num_classes, n_sigma, momentum):
        self.n_sigma, self.m = n_sigma, momentum
        self.prob_max_mu_t = torch.tensor(1.0 / num_classes)
        self.prob_max_var_t = torch.tensor(1.0)

    def masking(self, probs_x_ulb):
        max_probs, max_idx = probs_x_ulb.max(dim=-1)
        prob_max_mu_t = torch.mean(max_probs)
        prob_max_var_t = torch.var(max_probs, unbiased=True)
        self.prob_max_mu_t = self.m * self.prob_max_mu_t + (1 - self.m) * prob_max_mu_t.item()
        self.prob_max_var_t = self.m * self.prob_max_var_t + (1 - self.m) * prob_max_var_t.item()
        mu, var = self.prob_max_mu_t, self.prob_max_var_t
        return torch.exp(-((torch.clamp(max_probs - mu, max=0.0) ** 2) / (2 * var / (self.n_sigma ** 2))))


def test_truncated_gaussian_follows_usb_softmatch():
    """USB adds Python floats (`.item()`) to its float32 state; ours stays on the device: equal to float32
    rounding. A one-sample batch leaves σ² as it is (USB's unbiased variance of one sample would be NaN)."""
    g = torch.Generator().manual_seed(2)
    ours, usb = TruncatedGaussian(5, momentum=0.9, n_sigma=2.0), USBSoftMatch(5, 2.0, 0.9)
    for _ in range(5):
        probs = random_probs(g, 16, 5, sharpness=2.0)
        torch.testing.assert_close(ours(probs), usb.masking(probs))
        torch.testing.assert_close(ours.mean, usb.prob_max_mu_t)
        torch.testing.assert_close(ours.var, usb.prob_max_var_t)
    var = ours.var.clone()
    ours(probs[:1])
    assert torch.equal(ours.var, var)


# ---------------------------------------------------------------- AdaMatch


def test_relative_threshold_is_tau_times_the_labeled_mean_confidence():
    """USB's AdaMatchThresholdingHook: p_cutoff · mean top probability of the labeled batch (0.9 · 0.9 here)."""
    probs_lb = t([[0.8, 0.2], [0.0, 1.0]])
    probs = t([[0.85, 0.15], [0.2, 0.8], [0.5, 0.5]])
    assert RelativeThreshold(2, threshold=0.9)(probs, probs_lb=probs_lb).tolist() == [1, 0, 0]
    assert RelativeThreshold(2, threshold=0.5)(probs, probs_lb=probs_lb).tolist() == [1, 1, 1]  # cutoff 0.45
    with pytest.raises(SSLTrainError, match=r"RelativeThreshold needs the labeled batch's probabilities"):
        RelativeThreshold(2)(probs)


# ---------------------------------------------------------------- all parts

PARTS = {
    "fixed": partial(FixedThreshold, threshold=0.6),
    "curriculum": partial(CurriculumThreshold, threshold=0.6, warmup=False),
    "self_adaptive": partial(SelfAdaptiveThreshold, momentum=0.9),
    "truncated_gaussian": partial(TruncatedGaussian, momentum=0.9),
    "relative": partial(RelativeThreshold, threshold=0.9),
}


@pytest.mark.parametrize("name", sorted(PARTS))
def test_weights_are_one_float_in_0_1_per_sample(name):
    g = torch.Generator().manual_seed(3)
    part = PARTS[name](6)
    part.bind(SimpleNamespace(unlabeled=range(40)))
    seen = []
    for _ in range(10):
        probs = random_probs(g, 20, 6, sharpness=float(torch.rand(1, generator=g)) * 4)
        weights = part(probs, idx=torch.randperm(40, generator=g)[:20], probs_lb=random_probs(g, 8, 6))
        assert weights.shape == (20,) and weights.dtype == torch.float32
        assert ((0 <= weights) & (weights <= 1)).all()
        seen.append(weights)
    assert 0 < torch.cat(seen).mean() < 1  # some samples count and some do not


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device syncs exist only with a device")
@pytest.mark.parametrize("name", sorted(PARTS))
def test_a_part_never_waits_for_the_device(name, never_waits):
    """The state updates stay on the device: no `.item()`, no boolean-mask indexing, no Python loop over data."""
    part = PARTS[name](6).cuda()
    part.bind(SimpleNamespace(unlabeled=range(40)))
    g = torch.Generator().manual_seed(0)
    probs, probs_lb = random_probs(g, 20, 6).cuda(), random_probs(g, 8, 6).cuda()
    idx, logits = torch.randperm(40, generator=g)[:20].cuda(), torch.randn(20, 6).cuda()
    never_waits(lambda: part.penalty(logits, part(probs, idx=idx, probs_lb=probs_lb)))


@pytest.mark.parametrize("build, message", [
    (lambda: FixedThreshold(3, threshold=1.5), "algorithm.masking.threshold=1.5: expected a number in [0, 1]"),
    (lambda: CurriculumThreshold(3, threshold=-0.1), "algorithm.masking.threshold=-0.1: expected a number in [0, 1]"),
    (lambda: CurriculumThreshold(3, mapping="concave"),
     "algorithm.masking.mapping='concave': expected one of ['convex', 'linear']"),
    (lambda: CurriculumThreshold(3, warmup="yes"), "algorithm.masking.warmup='yes': expected true or false"),
    (lambda: SelfAdaptiveThreshold(3, momentum=1.2), "algorithm.masking.momentum=1.2: expected a number in [0, 1]"),
    (lambda: SelfAdaptiveThreshold(3, fairness_weight=-1),
     "algorithm.masking.fairness_weight=-1: expected a number in [0, inf]"),
    (lambda: TruncatedGaussian(3, n_sigma=0), "algorithm.masking.n_sigma=0: expected a number in (0, inf]"),
    (lambda: TruncatedGaussian(3, momentum="high"),
     "algorithm.masking.momentum='high': expected a number in [0, 1]"),
    (lambda: RelativeThreshold(3, threshold=True), "algorithm.masking.threshold=True: expected a number in [0, 1]"),
])
def test_a_bad_option_is_one_line_naming_the_key(build, message):
    with pytest.raises(SSLTrainError) as caught:
        build()
    assert str(caught.value) == message


def test_a_bad_option_in_a_composed_config_is_that_line():
    """Through Hydra: the algorithm builds its parts, so the refusal arrives inside an InstantiationException,
    which the commands turn into the part's own line."""
    cfg = compose("config", ["algorithm=flexmatch", "algorithm.masking.threshold=1.5"])
    net = Classifier(MLP((1, 4, 4), 3, hidden=(8,)), [0.5], [0.25])
    with pytest.raises(InstantiationException) as caught:
        instantiate(cfg.algorithm, net=net, num_classes=3)
    assert instantiation_message(caught.value) == "algorithm.masking.threshold=1.5: expected a number in [0, 1]"
