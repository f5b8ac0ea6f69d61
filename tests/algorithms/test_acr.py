"""ACR: the anchors' distances, the adaptive debiasing strength and the two heads' losses against hand
computations, and a few steps through the real Trainer on a long-tailed digits pool (data.imbalance)."""

import math
from functools import partial

import torch
import torch.nn.functional as F

from ssl_train.algorithms.acr import ACR, adaptive_tau, symmetric_kl
from ssl_train.losses import masked_cross_entropy
from ssl_train.models.classifier import Classifier
from ssl_train.models.mlp import MLP
from ssl_train.run.training import build


def test_symmetric_kl_by_hand():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    expected = 0.5 * (0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)) \
        + 0.5 * (0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5))
    assert math.isclose(float(symmetric_kl(p, q)), expected, rel_tol=1e-5)
    assert float(symmetric_kl(p, p)) == 0


def test_tau_is_small_for_a_pool_like_the_labels_and_large_for_one_unlike_them():
    near_labeled = adaptive_tau(torch.tensor([0.0, 2.0, 4.0]), 2.0)
    far = adaptive_tau(torch.tensor([4.0, 1.0, 0.0]), 2.0)
    assert math.isclose(float(near_labeled), 2 / (1 + math.exp(2) + math.exp(4)), rel_tol=1e-5)
    assert near_labeled < 0.3 < 1.8 < far


def test_the_two_heads_learn_each_others_debiased_pseudo_labels():
    torch.manual_seed(0)
    net = Classifier(MLP((1, 4, 4), 3, hidden=(8,)), [0.5], [0.25])
    model = ACR(net=net, num_classes=3, threshold=0.0, optimizer=partial(torch.optim.SGD, lr=0.1)).eval()
    model.labeled_prior.copy_(torch.tensor([0.6, 0.3, 0.1]))
    model.tau.fill_(1.0)
    x = torch.rand(6, 1, 4, 4)
    batch = {"lb": {"x": x[:2], "y": torch.tensor([0, 2])}, "ulb": {"weak": x[2:], "strong": x[2:].flip(-1)}}
    out = model.losses(batch)
    log_prior = model.labeled_prior.log()
    features_lb, features_w, features_s = net.features(x[:2]), net.features(x[2:]), net.features(x[2:].flip(-1))
    sup = F.cross_entropy(model.standard_head(features_lb), batch["lb"]["y"]) + F.cross_entropy(
        net.backbone.head(features_lb) + 2 * log_prior, batch["lb"]["y"])
    torch.testing.assert_close(out.sup, sup)
    weak = model.standard_head(features_w)
    torch.testing.assert_close(out.pseudo_labels, (weak - log_prior).argmax(-1))
    # threshold 0: every version is confident, so each sample counts twice
    twice = torch.full((4,), 2.0)
    expected = masked_cross_entropy(model.standard_head(features_s), (weak - log_prior).argmax(-1), twice)
    torch.testing.assert_close(out.unsup, expected)
    balanced = masked_cross_entropy(net.backbone.head(features_s), (weak - 2 * log_prior).argmax(-1), twice)
    torch.testing.assert_close(out.extra["balanced"], balanced)


def test_a_few_steps_on_a_long_tail_estimate_the_pool_mix_and_tau(make_cfg, tmp_path):
    cfg = make_cfg("algorithm=acr", "data.num_labels=100", "data.imbalance={labeled:10,unlabeled:10}",
                   "trainer.max_steps=12", "trainer.val_check_interval=12", "algorithm.estimate_start=0.1",
                   "algorithm.estimate_every=0.25", "algorithm.threshold=0.2",
                   "~callbacks.reference_profile", "~callbacks.pool_check")
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    prior = datamodule.labeled_class_prior()
    torch.testing.assert_close(model.labeled_prior, prior / prior.sum())
    assert not torch.allclose(model.pool_mix, torch.full((10,), 0.1))  # moved by the confident predictions
    assert 0 <= float(model.tau) < 2.0  # re-chosen at least once
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(saved["tau"], model.tau) and torch.equal(saved["pool_mix"], model.pool_mix)
