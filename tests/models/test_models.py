import pytest
import torch
from torch import nn

from ssl_train.errors import SSLTrainError
from ssl_train.models.classifier import Classifier
from ssl_train.models.cnn import SmallCNN
from ssl_train.models.mlp import MLP
from ssl_train.models.resnet import ResNet18
from ssl_train.models.wrn import WideResNet, wrn_28_2, wrn_28_8

NUM_CLASSES = 10

# (id, factory, input_shape); factories are called with keyword arguments only,
# which pins the common interface.
CASES = [
    ("cnn", SmallCNN, (1, 8, 8)),
    ("mlp", MLP, (1, 8, 8)),
    ("wrn28_2", wrn_28_2, (3, 32, 32)),
    ("resnet18_32", ResNet18, (3, 32, 32)),
    ("resnet18_96", ResNet18, (3, 96, 96)),
]
IDS = [c[0] for c in CASES]


def _build(factory, input_shape):
    torch.manual_seed(0)
    return factory(input_shape=input_shape, num_classes=NUM_CLASSES)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "factory", "input_shape"), CASES, ids=IDS)
def test_output_shape_and_features(name, factory, input_shape):
    model = _build(factory, input_shape)
    assert isinstance(model.head, nn.Linear)
    assert model.head.in_features == model.feature_dim
    x = torch.randn(3, *input_shape)
    model.train()
    assert model(x).shape == (3, NUM_CLASSES)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
    assert feats.shape == (3, model.feature_dim)
    torch.testing.assert_close(model.head(feats), logits)


@pytest.mark.parametrize(("name", "factory", "input_shape"), CASES, ids=IDS)
def test_gradients_reach_every_parameter(name, factory, input_shape):
    model = _build(factory, input_shape).train()
    x = torch.randn(4, *input_shape)
    y = torch.arange(4) % NUM_CLASSES
    nn.functional.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize(("name", "factory", "input_shape"), CASES, ids=IDS)
def test_batch_size_one_in_eval(name, factory, input_shape):
    model = _build(factory, input_shape).eval()
    with torch.no_grad():
        out = model(torch.randn(1, *input_shape))
    assert out.shape == (1, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
@pytest.mark.parametrize(("name", "factory", "input_shape"), CASES, ids=IDS)
def test_trace_matches_eager(name, factory, input_shape):
    model = _build(factory, input_shape).eval()
    example = torch.randn(2, *input_shape)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        # A different batch size catches shapes frozen into the trace.
        x = torch.randn(5, *input_shape)
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=1e-5)


def test_wrn_28_2_parameter_count():
    # 1,467,610 is the count of the reference (kekmodel/FixMatch-pytorch) WRN-28-2, 10 classes.
    n = _num_params(wrn_28_2((3, 32, 32), 10))
    assert abs(n - 1_467_610) <= 0.01 * 1_467_610
    assert n == 1_467_610


def test_wrn_28_8_parameter_count():
    n = _num_params(wrn_28_8(input_shape=(3, 32, 32), num_classes=100))
    assert 23_300_000 <= n <= 23_500_000


def test_wrn_follows_reference_hyperparameters():
    model = WideResNet((3, 32, 32), 10, depth=28, widen_factor=2)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.001 for m in bns)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    assert all(m.negative_slope == 0.1 for m in model.modules() if isinstance(m, nn.LeakyReLU))
    assert [g[0].conv1.out_channels for g in (model.block1, model.block2, model.block3)] == [32, 64, 128]
    assert [len(g) for g in (model.block1, model.block2, model.block3)] == [4, 4, 4]
    assert torch.all(model.head.bias == 0)
    with pytest.raises(SSLTrainError, match=r"^model\.depth=27: WideResNet depth must be 6n\+4 \(10, 16, 22, 28, "):
        WideResNet((3, 32, 32), 10, depth=27)


def test_wrn_accepts_other_channel_counts():
    model = wrn_28_2((1, 28, 28), 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 28, 28), (3, 9, 13)])
def test_small_cnn_accepts_any_size_from_8(input_shape):
    model = SmallCNN(input_shape, 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *input_shape)).shape == (2, 10)


def test_small_cnn_rejects_too_small_input():
    with pytest.raises(SSLTrainError, match=r"^model=SmallCNN needs images of at least 8x8 pixels, got "
                                            r"input_shape=\(1, 7, 8\)"):
        SmallCNN((1, 7, 8), 10)


@pytest.mark.parametrize("factory, kwargs, message", [
    (SmallCNN, dict(widths=[0, 1, 2]), r"^model\.widths=\[0, 1, 2\]: expected 3 positive integers"),
    (SmallCNN, dict(widths=[8, 16]), r"^model\.widths=\[8, 16\]: expected 3 positive integers"),
    (SmallCNN, dict(widths="wide"), r"^model\.widths='wide': expected 3 positive integers"),
    (SmallCNN, dict(widths=[8, 16.5, 32]), r"^model\.widths=\[8, 16\.5, 32\]: expected 3 positive integers"),
    (MLP, dict(hidden=[0]), r"^model\.hidden=\[0\]: expected a list of positive integers"),
    (MLP, dict(hidden=[32, -4]), r"^model\.hidden=\[32, -4\]: expected a list of positive integers"),
    (MLP, dict(hidden=256), r"^model\.hidden=256: expected a list of positive integers"),
    (MLP, dict(dropout=1.0), r"^model\.dropout=1\.0: expected a dropout probability in \[0, 1\)$"),
    (MLP, dict(dropout=-0.1), r"^model\.dropout=-0\.1: expected a dropout probability in \[0, 1\)$"),
    (MLP, dict(dropout="high"), r"^model\.dropout='high': expected a dropout probability"),
    (WideResNet, dict(depth=11), r"^model\.depth=11: WideResNet depth must be 6n\+4"),
    (WideResNet, dict(depth=4), r"^model\.depth=4: WideResNet depth must be 6n\+4"),
    (WideResNet, dict(depth=-2), r"^model\.depth=-2: WideResNet depth must be 6n\+4"),
    (WideResNet, dict(depth="28"), r"^model\.depth='28': WideResNet depth must be 6n\+4"),
    (WideResNet, dict(widen_factor=0), r"^model\.widen_factor=0: expected a positive integer"),
    (WideResNet, dict(drop_rate=1.5), r"^model\.drop_rate=1\.5: expected a dropout probability in \[0, 1\)$"),
    (wrn_28_2, dict(drop_rate=-1), r"^model\.drop_rate=-1: expected a dropout probability"),
    (wrn_28_8, dict(drop_rate=1), r"^model\.drop_rate=1: expected a dropout probability"),
    (ResNet18, dict(small_input="yes"), r"^model\.small_input='yes': expected true \(CIFAR stem\), false"),
])
def test_bad_model_options_name_the_config_key(factory, kwargs, message):
    shape = (1, 8, 8) if factory in (SmallCNN, MLP) else (3, 32, 32)
    with pytest.raises(SSLTrainError, match=message) as err:
        factory(input_shape=shape, num_classes=NUM_CLASSES, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("factory", [SmallCNN, MLP, wrn_28_2, ResNet18], ids=lambda f: f.__name__)
@pytest.mark.parametrize("input_shape, num_classes, message", [
    ((1, 8), 10, r"input_shape=\[1, 8\] \(from the data\): expected 3 positive integers"),
    ((0, 8, 8), 10, r"input_shape=\[0, 8, 8\] \(from the data\): expected 3 positive integers"),
    ((1, 8, 8), 0, r"num_classes=0 \(from the data\): expected a positive integer"),
])
def test_bad_data_shapes_are_refused_by_every_model(factory, input_shape, num_classes, message):
    with pytest.raises(SSLTrainError, match=r"^model=\w+: " + message):
        factory(input_shape=input_shape, num_classes=num_classes)


def test_classifier_refuses_bad_normalization_and_non_backbones():
    backbone = MLP((1, 8, 8), 10, hidden=(8,))
    Classifier(backbone, [0.3], [0.2])  # the ordinary case
    for mean, std in (([0.3], [0.0]), ([0.3, 0.1], [0.2, 0.2, 0.2]), ([], []), ([float("nan")], [0.2]), (["a"], [1])):
        with pytest.raises(SSLTrainError, match=r"^input normalization mean=.*: expected one finite value per image"):
            Classifier(backbone, mean, std)
    with pytest.raises(SSLTrainError, match=r"^model: Linear is not a backbone of ssl_train\.models"):
        Classifier(nn.Linear(2, 2), [0.3], [0.2])


def test_models_accept_hydra_list_configs():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"shape": [1, 8, 8], "widths": [4, 8, 8], "hidden": [16]})
    assert SmallCNN(cfg.shape, 10, widths=cfg.widths).feature_dim == 8
    assert MLP(cfg.shape, 10, hidden=cfg.hidden).feature_dim == 16


def test_resnet_stem_selection():
    small = ResNet18((3, 32, 32), 10)
    assert small.small_input and small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    large = ResNet18((3, 96, 96), 10)
    assert not large.small_input and large.conv1.kernel_size == (7, 7)
    assert isinstance(large.maxpool, nn.MaxPool2d)
    forced = ResNet18((1, 96, 96), 10, small_input=True)
    assert forced.small_input and forced.conv1.in_channels == 1
    gray_large = ResNet18((1, 128, 128), 10).eval()
    assert gray_large.conv1.in_channels == 1
    with torch.no_grad():
        assert gray_large(torch.randn(1, 1, 128, 128)).shape == (1, 10)


def test_mlp_options():
    model = MLP((1, 8, 8), 10, hidden=(32,), dropout=0.5)
    assert model.feature_dim == 32
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    linear_only = MLP((1, 8, 8), 10, hidden=())
    assert linear_only.feature_dim == 64
    assert linear_only(torch.randn(2, 1, 8, 8)).shape == (2, 10)
