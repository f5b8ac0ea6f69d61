"""Unit checks of the algorithm modules on tiny tensors (no trainer)."""

from functools import partial

import pytest
import torch

from ssl_train import losses
from ssl_train.algorithms.alignment import DistributionAlignment
from ssl_train.algorithms.base import SSLAlgorithm
from ssl_train.algorithms.fixmatch import FixMatch
from ssl_train.algorithms.masking import FixedThreshold
from ssl_train.algorithms.mean_teacher import MeanTeacher
from ssl_train.algorithms.supervised import Supervised
from ssl_train.errors import NonFiniteLossError, SSLTrainError
from ssl_train.models.classifier import Classifier
from ssl_train.models.mlp import MLP


def build(cls, **kw) -> SSLAlgorithm:
    torch.manual_seed(0)
    net = Classifier(MLP((1, 4, 4), 3, hidden=(8,)), [0.5], [0.25])
    return cls(net=net, num_classes=3, optimizer=partial(torch.optim.SGD, lr=0.1), **kw)


def fixmatch(threshold=0.95, window=None, **kw) -> FixMatch:
    """FixMatch on the tiny network, with the fixed threshold and (given a window) distribution alignment."""
    alignment = partial(DistributionAlignment, window=window) if window is not None else None
    return build(FixMatch, masking=partial(FixedThreshold, threshold=threshold), alignment=alignment, **kw)


def batch(n=4, mu=2):
    g = torch.Generator().manual_seed(1)
    x = lambda k: torch.rand(k, 1, 4, 4, generator=g)  # noqa: E731
    return {"lb": {"x": x(n), "y": torch.arange(n) % 3, "idx": torch.arange(n)},
            "ulb": {"weak": x(n * mu), "weak2": x(n * mu), "strong": x(n * mu), "idx": torch.arange(n * mu)},
            "step": torch.tensor(0)}


def test_mean_teacher_consistency_is_nonzero_and_trains_only_the_student():
    model = build(MeanTeacher)
    for p in model.net.parameters():  # make the student differ from its EMA teacher
        p.data.add_(0.3 * torch.randn_like(p))
    out = model.losses(batch())
    assert out.unsup.item() > 1e-6
    out.unsup.backward()
    student_grads = [p.grad for p in model.net.parameters()]
    assert all(g is not None for g in student_grads) and sum(g.abs().sum() for g in student_grads) > 0
    assert all(p.grad is None for p in model.ema.parameters())


def test_mean_teacher_strong_student_view_feeds_the_teacher_the_weak_view():
    model = build(MeanTeacher, student_view="strong")
    assert model.unlabeled_views == ("strong", "weak")
    b, seen = batch(), {}
    model.ema.register_forward_pre_hook(lambda m, args: seen.setdefault("teacher", args[0]))
    model.net.register_forward_pre_hook(lambda m, args: seen.setdefault("student", args[0]))
    model.losses(b)
    assert torch.equal(seen["teacher"], b["ulb"]["weak"])
    assert torch.equal(seen["student"][len(b["lb"]["x"]):], b["ulb"]["strong"])
    with pytest.raises(SSLTrainError, match="student_view='noisy'"):
        build(MeanTeacher, student_view="noisy")


def test_mean_teacher_requires_an_ema_teacher():
    with pytest.raises(SSLTrainError, match="ema_decay"):
        build(MeanTeacher, ema_decay=0.0, eval_ema=False)


def test_ema_update_arithmetic_with_warmup():
    model = build(Supervised, ema_decay=0.9)
    w = lambda m: next(m.parameters()).detach().clone()  # noqa: E731
    model.ema.update_parameters(model.net)  # first update (decay min(1 - 1/1, .9) = 0): a copy
    assert torch.equal(w(model.ema.module), w(model.net))
    ema_before = w(model.ema.module)
    next(model.net.parameters()).data.add_(1.0)
    model.ema.update_parameters(model.net)  # second update: decay min(1 - 1/2, .9) = 0.5
    assert torch.allclose(w(model.ema.module), 0.5 * ema_before + 0.5 * w(model.net))


def test_a_restored_ema_continues_its_warm_up_where_the_saved_one_was():
    """The update count lives on the host (no device sync per step) and comes back with a checkpoint."""
    model = build(Supervised, ema_decay=0.9)
    for _ in range(3):
        next(model.net.parameters()).data.add_(1.0)
        model.ema.update_parameters(model.net)
    restored = build(Supervised, ema_decay=0.9)
    restored.load_state_dict(model.state_dict())
    assert restored.ema.updates == int(model.ema.n_averaged) == 3
    for m in (model, restored):
        m.ema.update_parameters(m.net)  # decay min(1 - 1/4, .9) = 0.75 for both
    for ours, theirs in zip(restored.ema.state_dict().values(), model.ema.state_dict().values()):
        assert torch.equal(ours, theirs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device syncs exist only with a device")
def test_a_training_step_never_waits_for_the_device(never_waits, to_cuda):
    """The whole FixMatch step (each part alone: test_masking.py, test_alignment.py)."""
    model, b = fixmatch(0.5, window=8192).cuda(), to_cuda(batch())
    never_waits(lambda: (model.losses(b), model.ema.update_parameters(model.net)))


def test_fixmatch_uses_one_concatenated_forward():
    model = fixmatch(0.0)
    calls = []
    model.net.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    out = model.losses(batch(n=4, mu=2))
    assert calls == [4 + 8 + 8]
    assert out.weights.shape == (8,) and out.weights.sum() == 8  # threshold 0: every sample is used


def test_fixmatch_distribution_alignment_balances_the_remembered_predictions():
    model = fixmatch(0.0, window=12)
    assert {"alignment.window", "alignment.log_weights"} <= model.state_dict().keys()  # resumed runs align alike
    b = batch()  # 8 unlabeled samples per step
    model.eval()  # batch norm on running statistics: a sample's output does not depend on its batch
    with torch.no_grad():
        weak = model.net(b["ulb"]["weak"]).softmax(-1)
    model.losses(b)
    torch.testing.assert_close(model.alignment.window[:8], weak)
    first = model.alignment.log_weights.clone()
    expected = losses.balance_log_weights(weak, torch.full((3,), 1 / 3), torch.zeros(3), 1)
    torch.testing.assert_close(first, expected)
    model.losses(b)  # the window wraps: 12 slots hold the last 12 predictions
    assert int(model.alignment.seen) == 16
    torch.testing.assert_close(model.alignment.window[:4], weak[4:])
    for _ in range(200):
        model.losses(b)
    aligned = losses.aligned_probs(model.alignment.window, model.alignment.log_weights)
    torch.testing.assert_close(aligned.mean(0), torch.full((3,), 1 / 3), atol=1e-3, rtol=0)
    assert build(FixMatch).alignment is None and build(FixMatch).masking.threshold == 0.95


def test_a_restored_alignment_continues_its_window_where_the_saved_one_was():
    """The window's fill count lives on the host (no device sync per step) and comes back with a checkpoint."""
    model = fixmatch(0.0, window=12)
    b = batch()
    model.eval()
    for _ in range(2):
        model.losses(b)
    restored = fixmatch(0.0, window=12)
    restored.load_state_dict(model.state_dict())
    restored.eval()
    assert restored.alignment._seen == int(model.alignment.seen) == 16
    model.losses(b), restored.losses(b)
    torch.testing.assert_close(restored.alignment.window, model.alignment.window, rtol=0, atol=0)
    torch.testing.assert_close(restored.alignment.log_weights, model.alignment.log_weights, rtol=0, atol=0)


def test_fixmatch_alignment_rejects_an_empty_window():
    with pytest.raises(SSLTrainError, match=r"algorithm.alignment.window=0: expected an integer >= 1"):
        fixmatch(window=0)


def test_non_finite_loss_names_the_step_and_last_losses():
    model = build(Supervised)
    model._check_finite(torch.tensor(1.0), {"train/sup_loss": torch.tensor(1.0)})
    with pytest.raises(NonFiniteLossError, match=r"step 0: .*sup_loss.*last finite losses: \{'sup_loss': 1.0\}"):
        model._check_finite(torch.tensor(float("nan")), {"train/sup_loss": torch.tensor(float("nan"))})


def test_weight_decay_skips_biases_and_norm_parameters():
    model = build(Supervised)
    model.trainer = type("T", (), {"max_steps": 10})()
    groups = model.configure_optimizers()["optimizer"].param_groups
    assert groups[0]["weight_decay"] == 5e-4 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in groups[1]["params"])


@pytest.mark.parametrize("algorithm", ["MeanTeacher", "PiModel", "FixMatch"])
def test_a_module_built_by_hand_trains_and_checkpoints_without_wiring(algorithm, tmp_path):
    """The data module learns the views from the algorithm it is fitted with (Mean Teacher needs 'weak2'), and
    the checkpoint describes the hand-built parts well enough for `load_run` to rebuild network and data."""
    import lightning as L

    import ssl_train as st

    data = st.SSLDataModule(st.datasets.digits, num_labels=20, batch_size=8, mu=2)
    model = getattr(st, algorithm)(st.build_classifier(st.SmallCNN, data, widths=[4, 4, 4]),
                                   num_classes=data.num_classes)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert set(data.views) == set(model.unlabeled_views)
    trainer.save_checkpoint(tmp_path / "hand.ckpt")
    run = st.load_run(tmp_path / "hand.ckpt")
    assert run.config["model"] == {"_target_": "ssl_train.models.cnn.SmallCNN", "widths": [4, 4, 4]}
    assert run.config["algorithm"]["_target_"].endswith(algorithm) and run.classes == data.source.classes
    rebuilt = run.datamodule()
    assert rebuilt.test.indices.tolist() == data.test.indices.tolist()
    with torch.inference_mode():
        assert torch.equal(run.network(torch.zeros(2, 1, 8, 8)), model.eval_net.eval()(torch.zeros(2, 1, 8, 8)))
