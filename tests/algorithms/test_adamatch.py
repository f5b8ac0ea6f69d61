"""AdaMatch against hand computations on a linear network with batch norm, and a few steps through the Trainer."""

import copy
import csv
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_train.algorithms.adamatch import AdaMatch
from ssl_train.algorithms.alignment import RatioAlignment
from ssl_train.algorithms.masking import RelativeThreshold
from ssl_train.run.training import train


def tiny(seed=0) -> AdaMatch:
    """AdaMatch on Linear(4 → 3) followed by batch norm of the logits: they depend on the batch they are in."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))
    model = AdaMatch(net=net, num_classes=3, optimizer=partial(torch.optim.SGD, lr=0.1),
                     masking=partial(RelativeThreshold, threshold=0.9),
                     alignment=partial(RatioAlignment, momentum=0.0, target="predictions"))
    model.seed = seed
    return model


def tiny_batch(n=4, u=6):
    g = torch.Generator().manual_seed(1)
    x = lambda k: torch.rand(k, 1, 2, 2, generator=g)  # noqa: E731
    return {"step": torch.tensor(0), "lb": {"x": x(n), "y": torch.tensor([0, 1, 2, 0])[:n], "idx": torch.arange(n)},
            "ulb": {"weak": x(u), "strong": x(u), "idx": torch.arange(u)}}


def batch_normed(x, linear):
    """The network by hand in train mode: x·Wᵀ + b, normalized by this batch's mean and biased variance
    (BatchNorm1d starts at weight 1, bias 0)."""
    z = x.flatten(1) @ linear.weight.T + linear.bias
    return (z - z.mean(0)) / (z.var(0, unbiased=False) + 1e-5).sqrt()


def test_random_logit_interpolation_matches_a_hand_computation():
    model, b = tiny(), tiny_batch()
    x_lb, weak, strong = b["lb"]["x"], b["ulb"]["weak"], b["ulb"]["strong"]
    logits_lb, logits_weak, logits_strong = model.forward_views(x_lb, weak, strong)
    linear = model.net[1]
    joint = batch_normed(torch.cat([x_lb, weak, strong]), linear)
    alone = batch_normed(x_lb, linear)
    assert (alone - joint[:4]).abs().min() > 1e-3  # the two batch-norm contexts really differ
    # λ: the documented draw, U(0, 1) per logit from a generator seeded by (run seed, step, rank).
    seed = int(np.random.default_rng([0, 0, 0, 0xADA]).integers(2**62))
    lam = torch.rand(4, 3, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(model.interpolation_weights(torch.Size([4, 3]), torch.device("cpu")), lam)
    torch.testing.assert_close(logits_lb, lam * alone + (1 - lam) * joint[:4])
    torch.testing.assert_close(logits_weak, joint[4:10])
    torch.testing.assert_close(logits_strong, joint[10:])
    # The supervised loss is on the interpolated logits; gradients reach the network through both passes.
    out = tiny().losses(b)
    torch.testing.assert_close(out.sup, F.cross_entropy(lam * alone + (1 - lam) * joint[:4], b["lb"]["y"]))


def test_the_alone_pass_runs_in_train_mode_and_leaves_running_statistics_to_the_joint_pass():
    """Running statistics move once per step, by the joint batch (as the official code restores its variables)."""
    model, b = tiny(), tiny_batch()
    reference = copy.deepcopy(model.net)
    reference(torch.cat([b["lb"]["x"], b["ulb"]["weak"], b["ulb"]["strong"]]))  # one joint pass, train mode
    model.losses(b)
    for (name, ours), theirs in zip(model.net.named_buffers(), reference.buffers()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, msg=name)
    assert int(model.net[2].num_batches_tracked) == 1
    assert model.net.training  # still in train mode after the step


def test_relative_threshold_on_hand_made_probabilities():
    probs_lb = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.7, 0.2]])  # mean top probability 0.8: cutoff 0.9·0.8 = 0.72
    probs = torch.tensor([[0.73, 0.2, 0.07], [0.2, 0.71, 0.09], [0.3, 0.3, 0.4], [0.0, 0.0, 1.0]])
    weights = RelativeThreshold(3, threshold=0.9)(probs, probs_lb=probs_lb)
    assert weights.tolist() == [1.0, 0.0, 0.0, 1.0]
    confident_lb = torch.tensor([[0.99, 0.005, 0.005], [0.01, 0.98, 0.01]])  # a more confident model: a higher bar
    assert RelativeThreshold(3, threshold=0.9)(probs, probs_lb=confident_lb).tolist() == [0.0, 0.0, 0.0, 1.0]


def ratio_aligned(probs, target, model_mean):
    """p · target / model mean, renormalized per row (the paper's distribution alignment)."""
    scaled = probs * torch.tensor(target) / torch.tensor(model_mean)
    return scaled / scaled.sum(1, keepdim=True)


def test_alignment_to_the_labeled_predictions_uses_the_batch_means():
    align = RatioAlignment(3, momentum=0.0, target="predictions")
    probs_lb = torch.tensor([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2]])  # mean (0.4, 0.4, 0.2)
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.4, 0.4, 0.2]])  # mean (0.6, 0.25, 0.15)
    torch.testing.assert_close(align(probs, probs_lb=probs_lb), ratio_aligned(probs, [0.4, 0.4, 0.2],
                                                                              [0.6, 0.25, 0.15]))
    # Momentum 0: the next batch is aligned by its own means, nothing remembered (roles swapped here).
    torch.testing.assert_close(align(probs_lb, probs_lb=probs), ratio_aligned(probs_lb, [0.6, 0.25, 0.15],
                                                                              [0.4, 0.4, 0.2]))


def test_same_seed_and_step_same_loss_another_seed_other_draws():
    first, second = tiny().losses(tiny_batch()), tiny().losses(tiny_batch())
    assert torch.equal(first.sup, second.sup) and torch.equal(first.unsup, second.unsup)
    assert not torch.equal(tiny(seed=1).losses(tiny_batch()).sup, first.sup)
    shape, cpu = torch.Size([4, 3]), torch.device("cpu")
    assert not torch.equal(tiny(seed=1).interpolation_weights(shape, cpu), tiny().interpolation_weights(shape, cpu))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device syncs exist only with a device")
def test_an_adamatch_step_never_waits_for_the_device(never_waits, to_cuda):
    model, b = tiny().cuda(), to_cuda(tiny_batch())
    never_waits(lambda: model.losses(b))


def test_adamatch_trains_five_steps_through_the_trainer_with_the_cosine_ramp(make_cfg, tmp_path):
    metrics = train(make_cfg("algorithm=adamatch", "trainer.max_steps=5", "trainer.val_check_interval=5", "test=false",
                             "~callbacks.reference_profile", "~callbacks.pool_check"))
    assert metrics["train/steps"] == 5 and 0.0 <= metrics["val/acc_best"] <= 1.0
    rows = [r for r in csv.DictReader((tmp_path / "csv" / "metrics.csv").open()) if r.get("train/unsup_weight")]
    # μ(t) = 1/2 − cos(min(π, 2πt/T))/2 over the first half (2 of 5 steps): 0, 1/2, then 1.
    assert [float(r["train/unsup_weight"]) for r in rows] == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0])
    assert all(r.get("train/mask_ratio") and r.get("train/unsup_loss") for r in rows)
