"""MixMatch against hand computations on a tiny linear network, and a few steps through the real Trainer."""

import csv
import json
from functools import partial

import pytest
import torch
from lightning.pytorch.callbacks import LambdaCallback
from torch import nn

from ssl_train.algorithms.mixmatch import MixMatch
from ssl_train.errors import SSLTrainError
from ssl_train.losses import mixup
from ssl_train.run.training import build, train


def tiny(**kw) -> MixMatch:
    """MixMatch on a linear map of 2x2 one-channel images to 3 classes (no batch norm: outputs are per sample)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    return MixMatch(net=net, num_classes=3, optimizer=partial(torch.optim.SGD, lr=0.1), **kw)


def tiny_batch(n=2, u=3):
    g = torch.Generator().manual_seed(1)
    x = lambda k: torch.rand(k, 1, 2, 2, generator=g)  # noqa: E731
    return {"step": torch.tensor(0), "lb": {"x": x(n), "y": torch.tensor([0, 2])[:n], "idx": torch.arange(n)},
            "ulb": {"weak": x(u), "weak2": x(u), "idx": torch.arange(u)}}


def test_mixup_matches_a_hand_computation():
    x = torch.tensor([[1.0], [2.0], [4.0]])
    y = torch.eye(3)
    mixed_x, mixed_y = mixup(x, y, 0.7, torch.tensor([2, 0, 1]))
    torch.testing.assert_close(mixed_x, torch.tensor([[1.9], [1.7], [3.4]]))
    torch.testing.assert_close(mixed_y, torch.tensor([[0.7, 0.0, 0.3], [0.3, 0.7, 0.0], [0.0, 0.3, 0.7]]))


def test_the_mix_draw_is_a_function_of_seed_and_step():
    model = tiny()
    lam, perm = model.mix_draw(5, 8, torch.device("cpu"))
    again_lam, again_perm = tiny().mix_draw(5, 8, torch.device("cpu"))
    assert lam == again_lam and torch.equal(perm, again_perm)
    assert 0.5 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(8))
    other = [model.mix_draw(s, 8, torch.device("cpu")) for s in range(6, 10)]
    assert all(lam != o[0] for o in other) and any(not torch.equal(perm, o[1]) for o in other)
    model.seed += 1  # another run seed, other numbers
    assert model.mix_draw(5, 8, torch.device("cpu"))[0] != lam
    assert tiny(alpha=0).mix_draw(5, 8, torch.device("cpu"))[0] == 1.0


def hand_losses(model: MixMatch, b: dict):
    """The paper's Algorithm 1 and losses written out on the linear network: (sup, unsup, guessed labels)."""
    w, bias = model.net[1].weight, model.net[1].bias
    logits = lambda x: x.flatten(1) @ w.T + bias  # noqa: E731
    softmax = lambda z: z.exp() / z.exp().sum(1, keepdim=True)  # noqa: E731
    with torch.no_grad():
        p = (softmax(logits(b["ulb"]["weak"])) + softmax(logits(b["ulb"]["weak2"]))) / 2
        q = p**2 / (p**2).sum(1, keepdim=True)  # T = 0.5
    inputs = torch.cat([b["lb"]["x"], b["ulb"]["weak"], b["ulb"]["weak2"]])
    targets = torch.cat([torch.eye(3)[b["lb"]["y"]], q, q])
    lam, perm = model.mix_draw(0, len(inputs), torch.device("cpu"))
    mixed_x = torch.stack([lam * inputs[i] + (1 - lam) * inputs[perm[i]] for i in range(len(inputs))])
    mixed_y = torch.stack([lam * targets[i] + (1 - lam) * targets[perm[i]] for i in range(len(inputs))])
    z = logits(mixed_x)
    n = len(b["lb"]["x"])
    sup = -(mixed_y[:n] * (softmax(z[:n])).log()).sum(1).mean()
    unsup = ((softmax(z[n:]) - mixed_y[n:]) ** 2).sum() / (len(z[n:]) * 3)
    return sup, unsup, q


def test_mixmatch_losses_match_a_hand_computation_and_targets_get_no_gradient():
    model, b = tiny(), tiny_batch()
    assert model.unlabeled_views == ("weak", "weak2")
    out = model.losses(b)
    sup, unsup, q = hand_losses(model, b)
    assert 0.0 < model.mix_draw(0, 8, torch.device("cpu"))[0] < 1.0  # the draw really mixes
    torch.testing.assert_close(out.sup, sup)
    torch.testing.assert_close(out.unsup, unsup)
    assert torch.equal(out.weights, torch.ones(3)) and torch.equal(out.pseudo_labels, q.argmax(1))
    # With the targets constant (the hand computation's no_grad), the gradients agree: none flows into the guess.
    expected = torch.autograd.grad(sup + 75 * unsup, list(model.net.parameters()))
    got = torch.autograd.grad(out.sup + 75 * out.unsup, list(model.net.parameters()))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)
    assert not model.guess([b["ulb"]["weak"]]).requires_grad


def test_same_step_same_loss():
    first = tiny().losses(tiny_batch())
    second = tiny().losses(tiny_batch())
    assert torch.equal(first.sup, second.sup) and torch.equal(first.unsup, second.unsup)


def test_k_views_and_bad_options():
    assert tiny(num_views=3).unlabeled_views == ("weak", "weak2", "weak3")
    for option, value in [("temperature", 0), ("alpha", -1), ("num_views", 0)]:
        with pytest.raises(SSLTrainError, match=f"algorithm.{option}={value}"):
            tiny(**{option: value})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device syncs exist only with a device")
def test_a_mixmatch_step_never_waits_for_the_device(never_waits, to_cuda):
    model, b = tiny().cuda(), to_cuda(tiny_batch())
    never_waits(lambda: model.losses(b))


def last_weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def test_mixmatch_trains_through_the_trainer_and_resumes_identically(make_cfg, tmp_path):
    steps = ["algorithm=mixmatch", "trainer.max_steps=5", "test=false"]
    train(make_cfg(*steps, f"paths.output_dir={tmp_path / 'whole'}"))
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text())["train/steps"] == 5
    rows = list(csv.DictReader((tmp_path / "whole" / "csv" / "metrics.csv").open()))
    assert {float(r["train/mask_ratio"]) for r in rows if r.get("train/mask_ratio")} == {1.0}
    assert any(r.get("train/pseudo_acc") for r in rows) and any(r.get("train/unsup_loss") for r in rows)

    datamodule, model, trainer = build(make_cfg(*steps, f"paths.output_dir={tmp_path / 'part'}"))
    trainer.callbacks.append(LambdaCallback(  # an interruption after step 3 of 5
        on_train_batch_end=lambda trainer, *_: setattr(trainer, "should_stop", trainer.global_step >= 3)))
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 3
    trainer.save_checkpoint(tmp_path / "part.ckpt")
    train(make_cfg(*steps, f"paths.output_dir={tmp_path / 'resumed'}", f"ckpt_path={tmp_path / 'part.ckpt'}"))
    whole, resumed = last_weights(tmp_path / "whole"), last_weights(tmp_path / "resumed")
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
