"""IOMatch: the one-vs-all loss, the fused open-set targets and the inlier mask against hand computations, and a
few steps through the real Trainer and config on digits with unseen classes (data.open_set)."""

import math
from functools import partial

import torch
import torch.nn.functional as F

from ssl_train.algorithms.iomatch import IOMatch, one_vs_all_loss, open_set_targets
from ssl_train.algorithms.masking import FixedThreshold
from ssl_train.models.classifier import Classifier
from ssl_train.models.mlp import MLP
from ssl_train.run.training import build


def ova_logits(p_positive) -> torch.Tensor:
    """One-vs-all logits (N × 2 × K) whose heads give these probabilities of "class k"."""
    p = torch.tensor(p_positive)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


def test_one_vs_all_loss_is_the_true_head_plus_the_hardest_negative():
    logits = ova_logits([[0.8, 0.3, 0.1], [0.4, 0.6, 0.9]])
    loss = one_vs_all_loss(logits, torch.tensor([0, 1]))
    first = -math.log(0.8) - math.log(1 - 0.3)   # hardest other head: 0.3
    second = -math.log(0.6) - math.log(1 - 0.9)  # hardest other head: 0.9
    assert math.isclose(float(loss), (first + second) / 2, rel_tol=1e-5)


def test_open_set_targets_fuse_closed_probabilities_with_the_heads():
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    targets, outlier = open_set_targets(probs, ova_logits([[0.9, 0.5, 0.2]]))
    expected = [0.7 * 0.9, 0.2 * 0.5, 0.1 * 0.2, 0.7 * 0.1 + 0.2 * 0.5 + 0.1 * 0.8]
    torch.testing.assert_close(targets, torch.tensor([expected]))
    torch.testing.assert_close(outlier, torch.tensor([expected[-1]]))
    torch.testing.assert_close(targets.sum(-1), torch.ones(1))


def test_pseudo_labels_train_only_on_the_images_the_heads_take_for_inliers():
    torch.manual_seed(0)
    net = Classifier(MLP((1, 4, 4), 3, hidden=(8,)), [0.5], [0.25])
    model = IOMatch(net=net, num_classes=3, masking=partial(FixedThreshold, threshold=0.0), proj_size=4,
                    optimizer=partial(torch.optim.SGD, lr=0.1)).eval()  # batch norm: the same statistics per pass
    x = torch.rand(6, 1, 4, 4)
    batch = {"lb": {"x": x[:2], "y": torch.tensor([0, 1])}, "ulb": {"weak": x[2:], "strong": x[2:].flip(-1)}}
    out = model.losses(batch)
    features = net.features(x[2:])
    ova, _ = model.heads(features)
    _, outlier = open_set_targets(net.backbone.head(features).softmax(-1), ova)
    torch.testing.assert_close(out.weights, (outlier < 0.5).float())
    logits_strong = net(x[2:].flip(-1))
    expected = (F.cross_entropy(logits_strong, out.pseudo_labels, reduction="none") * out.weights).mean()
    torch.testing.assert_close(out.unsup, expected)
    assert set(out.extra) == {"ova", "open"}


def test_a_few_steps_on_an_open_set_train_the_heads_and_score_outliers(make_cfg, tmp_path):
    cfg = make_cfg("algorithm=iomatch", "data.open_set=[0,1,2,3,4,5]", "data.num_labels=24", "trainer.max_steps=4",
                   "trainer.val_check_interval=4", "~callbacks.reference_profile", "~callbacks.pool_check")
    datamodule, model, trainer = build(cfg)
    heads = [p.detach().clone() for p in model.heads.parameters()]
    trainer.fit(model, datamodule=datamodule)
    assert all(not torch.equal(a, b) for a, b in zip(heads, model.heads.parameters()))
    result = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    assert 0 <= result["test/outlier_auroc"] <= 1 and "test/acc" in result
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("heads_ema.module.") for k in saved)
