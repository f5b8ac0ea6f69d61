"""Monitor fixtures: a small synthetic profile for fast statistical checks (the trained digits run and its
test split are shared: tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from ssl_train.models.classifier import Classifier
from ssl_train.models.mlp import MLP
from ssl_train.run.profile import ProfileOptions, build_profile, model_spec

SHAPE = (1, 4, 4)


def synthetic_images(n: int, seed: int, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """1×4×4 images: three classes with different mean brightness, Gaussian pixel noise, an optional offset."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = 0.3 + 0.2 * y[:, None, None, None].float() + 0.1 * torch.randn(n, *SHAPE, generator=gen) + shift
    return x.clamp(0, 1), y


@pytest.fixture(scope="session")
def images():
    """synthetic_images(n, seed, shift=0.0) → (x, y)."""
    return synthetic_images


@pytest.fixture(scope="session")
def synthetic_profile():
    """A random (untrained, seeded) MLP profiled on 300 synthetic images: drift tests need no trained model."""
    torch.manual_seed(0)
    network = Classifier(MLP(SHAPE, 3, hidden=[32]), [0.5], [0.25]).eval()
    x, y = synthetic_images(300, seed=1)
    pool, _ = synthetic_images(300, seed=2)
    config = {"model": {"_target_": "ssl_train.models.mlp.MLP", "hidden": [32]}}
    spec = model_spec(network, config, ["a", "b", "c"], SHAPE, [0.5], [0.25])
    return build_profile(network, [(x[:150], y[:150]), (x[150:], y[150:])], spec, {"checkpoint": None},
                         ProfileOptions(pca_components=8), basis_batches=[pool])
