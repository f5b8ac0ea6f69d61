"""SimMatch: label propagation, the instance loss and the labeled bank against hand computations on tiny tensors,
its checkpointed state, and a few steps through the real Trainer and config."""

from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_train import losses
from ssl_train.algorithms.alignment import RatioAlignment
from ssl_train.algorithms.masking import FixedThreshold
from ssl_train.algorithms.simmatch import SimMatch
from ssl_train.errors import SSLTrainError
from ssl_train.models.classifier import Classifier
from ssl_train.models.mlp import MLP
from ssl_train.run.training import build

BANK_LABELS = [0, 1, 2, 0, 1, 2]


class TinyData:
    """What SimMatch binds to: the labeled set's labels (one bank entry each) and the seed of the bank's start."""

    seed = 0
    labeled = SimpleNamespace(labels=np.array(BANK_LABELS))


def simmatch(threshold=0.0, bound=True, **kw) -> SimMatch:
    torch.manual_seed(0)
    net = Classifier(MLP((1, 4, 4), 3, hidden=(8,)), [0.5], [0.25])
    model = SimMatch(net=net, num_classes=3, optimizer=partial(torch.optim.SGD, lr=0.1), proj_size=4,
                     masking=partial(FixedThreshold, threshold=threshold), **kw)
    if bound:
        model.bind(TinyData())
    return model


def batch(n=4, mu=2):
    g = torch.Generator().manual_seed(1)
    x = lambda k: torch.rand(k, 1, 4, 4, generator=g)  # noqa: E731
    return {"lb": {"x": x(n), "y": torch.arange(n) % 3, "idx": torch.arange(n)},
            "ulb": {"weak": x(n * mu), "strong": x(n * mu), "idx": torch.arange(n * mu)}, "step": torch.tensor(0)}


def test_label_propagation_by_hand():
    probs = torch.tensor([[0.6, 0.3, 0.1]])
    similarity = torch.tensor([[0.5, 0.3, 0.2]])  # to bank entries labeled 0, 1, 1
    instance, classes = losses.label_propagation(probs, similarity, torch.tensor([0, 1, 1]), alpha=0.9)
    # 0.5·0.6, 0.3·0.3, 0.2·0.3 = 0.30, 0.09, 0.06, over 0.45; per class the similarity sums to 0.5, 0.5, 0.
    torch.testing.assert_close(instance, torch.tensor([[2 / 3, 0.2, 0.4 / 3]]))
    torch.testing.assert_close(classes, torch.tensor([[0.59, 0.32, 0.09]]))


def test_losses_match_a_hand_computation_on_the_steps_bank():
    model = simmatch(threshold=0.0)
    b, bank, labels = batch(), model.bank.clone(), torch.tensor(BANK_LABELS)
    (_, logits_w, logits_s), (_, e_w, e_s) = model.embed(b["lb"]["x"], b["ulb"]["weak"], b["ulb"]["strong"])
    out = model.losses(b)
    sim = torch.exp(e_w @ bank.T / 0.1)
    sim = sim / sim.sum(1, keepdim=True)
    probs = logits_w.softmax(-1)
    scaled = sim * probs[:, labels]  # each entry's similarity times the probability of its label
    scaled = scaled / scaled.sum(1, keepdim=True)
    expected_in = -(scaled * torch.log_softmax(e_s @ bank.T / 0.1, dim=1)).sum(1).mean()
    per_class = torch.stack([sim[:, labels == c].sum(1) for c in range(3)], dim=1)
    targets = 0.9 * probs + 0.1 * per_class
    torch.testing.assert_close(out.extra["instance"], expected_in)
    torch.testing.assert_close(out.unsup, -(targets * logits_s.log_softmax(-1)).sum(1).mean())  # τ 0: all count
    assert torch.equal(out.pseudo_labels, targets.argmax(-1)) and out.weights.sum() == 8
    assert not torch.equal(model.bank[:4], bank[:4]) and torch.equal(model.bank[4:], bank[4:])  # updated after


def test_the_instance_loss_and_propagation_wait_for_the_warmup():
    model = simmatch(threshold=0.0, warmup_fraction=0.25)
    model.trainer = SimpleNamespace(max_steps=8, global_step=1)  # 2 warm-up steps
    b = batch()
    out = model.losses(b)
    assert out.extra["instance"] == 0
    _, logits_w, logits_s = model.embed(b["lb"]["x"], b["ulb"]["weak"], b["ulb"]["strong"])[0]
    targets = logits_w.softmax(-1)  # the class probabilities alone
    torch.testing.assert_close(out.unsup, -(targets * logits_s.log_softmax(-1)).sum(1).mean())
    model.trainer.global_step = 2
    assert model.losses(b).extra["instance"] > 0


def test_bank_update_moves_the_given_rows_and_sets_their_labels():
    model = simmatch(bank_momentum=0.5)
    start = model.bank.clone()
    torch.testing.assert_close(start, simmatch().bank, rtol=0, atol=0)  # seeded
    torch.testing.assert_close(start.norm(dim=1), torch.ones(6))
    new = F.normalize(torch.randn(2, 4), dim=1)
    model.update_bank(new, torch.tensor([1, 0]), torch.tensor([4, 1]))
    for row, k in ((4, 0), (1, 1)):
        mixed = 0.5 * start[row] + 0.5 * new[k]
        torch.testing.assert_close(model.bank[row], mixed / mixed.norm())
    assert torch.equal(model.bank[[0, 2, 3, 5]], start[[0, 2, 3, 5]])
    assert model.bank_labels.tolist() == [0, 0, 2, 0, 1, 2]


def test_a_checkpoint_restores_the_bank_exactly():
    model = simmatch()
    for _ in range(2):
        model.losses(batch())
    state = model.state_dict()
    assert {"bank", "bank_labels", "projection.0.weight"} <= state.keys()
    fresh = simmatch()
    assert not torch.equal(fresh.bank, model.bank)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.bank, model.bank) and torch.equal(fresh.bank_labels, model.bank_labels)
    with pytest.raises(SSLTrainError, match="bound data module"):
        simmatch(bound=False).losses(batch())


def test_five_steps_through_the_trainer_train_the_head_and_fill_the_bank(make_cfg, tmp_path):
    cfg = make_cfg("algorithm=simmatch", "model.widths=[4,4,4]", "trainer.max_steps=5",
                   "trainer.val_check_interval=5", "~callbacks.reference_profile", "~callbacks.pool_check")
    datamodule, model, trainer = build(cfg)
    assert isinstance(model.alignment, RatioAlignment) and model.alignment.momentum == 0.96875
    assert model.masking.threshold == 0.95 and model.hparams.temperature == 0.1
    head = [p.detach().clone() for p in model.projection.parameters()]
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 5
    trained = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert {id(p) for p in model.projection.parameters()} <= trained
    assert all(not torch.equal(a, b) for a, b in zip(head, model.projection.parameters()))
    labels = datamodule.labeled.labels
    assert model.bank.shape == (len(labels), 128) and model.bank_labels.tolist() == labels.tolist()
    torch.testing.assert_close(model.bank.norm(dim=1), torch.ones(len(labels)))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(saved["bank"], model.bank)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device syncs exist only with a device")
def test_a_training_step_never_waits_for_the_device(never_waits, to_cuda):
    model, b = simmatch(alignment=partial(RatioAlignment, momentum=0.96875)).cuda(), to_cuda(batch())
    never_waits(lambda: model.losses(b))
