import pytest
import torch
from torch import nn

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
    with pytest.raises(ValueError):
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
    with pytest.raises(ValueError):
        SmallCNN((1, 7, 8), 10)


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
