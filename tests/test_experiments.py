"""The experiment configs follow their papers' protocol, checked on stand-in data (CIFAR is not downloaded here).

Every conf/experiment/*.yaml composes; its data options, with the dataset replaced by synthetic images that
have a test split of their own, must give an unlabeled pool that is the whole training set (labeled images
included), no validation images taken from it, and a validation split carved from the test split, disjoint
from the test images that are reported.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hydra.utils import instantiate

from ssl_train.algorithms.alignment import RatioAlignment
from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import SourceData, digits, synthetic
from ssl_train.data.scenarios import UNSEEN
from ssl_train.errors import SSLTrainError
from ssl_train.models.classifier import Classifier
from ssl_train.models.mlp import MLP
from ssl_train.run.config import compose, config_dir
from ssl_train.run.data import build_datamodule

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
CIFAR10_METHODS = sorted(name.removeprefix("cifar10_") for name in EXPERIMENTS if name.startswith("cifar10_"))
CLASSES = {"cifar10": 10, "cifar100": 100}
NO_ALIGNMENT = {"fixmatch", "flexmatch", "freematch", "uda"}  # the papers align nothing
STEPS = {"iomatch": 2**18}  # IOMatch's runs: 256 epochs of 1024 steps
MU = {"mixmatch": 1}  # MixMatch mixes as many unlabeled images as labeled ones; the others take 7x


@functools.cache
def composed(*overrides: str):
    return compose("config", overrides)


def stand_in(num_classes: int, train: int, test: int) -> SourceData:
    """Synthetic images shaped like a torchvision CIFAR source: a train pool and a test split."""
    images = functools.partial(synthetic, num_classes=num_classes, image_shape=(3, 4, 4))
    return SourceData(train=images(train, seed=0).train, classes=[str(k) for k in range(num_classes)],
                      scale=1 / 255, test=images(test, seed=1).train)


def experiment_data(name: str) -> tuple[SSLDataModule, SourceData]:
    """The experiment's data module, built from its composed options with the dataset swapped for a stand-in."""
    options = composed(f"experiment={name}").data
    source = stand_in(CLASSES[options.dataset._target_.rsplit(".", 1)[-1]], train=10 * options.num_labels,
                      test=2 * options.val_size)
    datamodule = instantiate(options, dataset=lambda: source)
    datamodule.setup()
    return datamodule, source


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_follows_the_papers_data_protocol(name):
    datamodule, _ = experiment_data(name)
    source = datamodule.source  # an open-set experiment sees the stand-in relabeled (data.open_set)
    n_train, n_test = len(source.train), len(source.test)
    classes = CLASSES[composed(f"experiment={name}").data.dataset._target_.rsplit(".", 1)[-1]]
    # The unlabeled pool is the whole training set, the labeled images included; nothing else is carved from it.
    assert datamodule.unlabeled.source is source.train and datamodule.labeled.source is source.train
    np.testing.assert_array_equal(datamodule.unlabeled.indices, np.arange(n_train))
    assert np.isin(datamodule.labeled.indices, datamodule.unlabeled.indices).all()
    assert datamodule.splits.val is None and datamodule.splits.test is None
    # Validation is a stratified carve of val_size test images (of the labeled classes); the reported test split
    # is the rest.
    assert datamodule.val.source is source.test and datamodule.test.source is source.test
    val, test = datamodule.val.indices, datamodule.test.indices
    assert len(val) == datamodule.val_size * datamodule.num_classes // classes and not np.intersect1d(val, test).size
    held = np.sort(np.concatenate([val, test]))
    if datamodule.open_set is None:
        np.testing.assert_array_equal(held, np.arange(n_test))
    else:  # the carve's unseen-class images left validation, the test split keeps its own
        assert (datamodule.test.labels == UNSEEN).any() and (datamodule.val.labels >= 0).all()
    per_class = np.bincount(datamodule.val.labels, minlength=datamodule.num_classes)
    assert per_class.min() == per_class.max() == datamodule.val_size // classes
    assert composed(f"experiment={name}").test_checkpoint == "last"


@pytest.mark.parametrize("method", CIFAR10_METHODS)
def test_cifar10_experiment_has_the_papers_schedule_and_alignment(method):
    cfg, own = composed(f"experiment=cifar10_{method}"), composed(f"algorithm={method}").algorithm
    assert cfg.model._target_ == "ssl_train.models.wrn.wrn_28_2" and cfg.data.dataset._target_.endswith(".cifar10")
    steps = STEPS.get(method, 2**20)
    assert (cfg.data.batch_size, cfg.data.mu, cfg.trainer.max_steps) == (64, MU.get(method, 7), steps)
    assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov) == (
        "torch.optim.SGD", 0.03, 0.9, True)
    assert cfg.algorithm.weight_decay == 5e-4 and cfg.algorithm.get("lr_schedule", "cosine") == "cosine"
    assert cfg.algorithm._target_ == own._target_ and cfg.algorithm.ema_decay == 0.999 and cfg.algorithm.eval_ema
    net = Classifier(MLP((3, 4, 4), 10, hidden=[8]), [0.5] * 3, [0.25] * 3)  # the config, not the network, is tested
    model = instantiate(cfg.algorithm, net=net, num_classes=10, optimizer=instantiate(cfg.optimizer))
    if method in NO_ALIGNMENT:
        assert cfg.algorithm.alignment is None and getattr(model, "alignment", None) is None
    else:  # the method's own alignment, as its algorithm config has it
        assert cfg.algorithm.get("alignment") == own.get("alignment")
    if method == "softmatch":
        assert isinstance(model.alignment, RatioAlignment) and cfg.algorithm.alignment.target == "uniform"


def test_val_from_test_rebuilds_from_its_config_and_works_without_a_test_split():
    """digits has no test split: test is carved from the pool first, then validation from that test split."""
    datamodule = SSLDataModule(digits, num_labels=40, val_size=50, test_size=300, val_from="test")
    datamodule.setup()
    assert (len(datamodule.val), len(datamodule.test)) == (50, 250)
    held = np.concatenate([datamodule.val.indices, datamodule.test.indices])
    np.testing.assert_array_equal(np.sort(held), datamodule.splits.test)
    assert not np.intersect1d(held, datamodule.unlabeled.indices).size
    rebuilt = instantiate(datamodule.to_config())
    rebuilt.setup()
    assert rebuilt.val_from == "test"
    np.testing.assert_array_equal(rebuilt.val.indices, datamodule.val.indices)
    np.testing.assert_array_equal(rebuilt.test.indices, datamodule.test.indices)


def with_val_split() -> SourceData:
    source = stand_in(2, train=20, test=20)
    source.val = source.test
    return source


@pytest.mark.parametrize("options, source, message", [
    (dict(val_from="valid"), stand_in(2, 20, 20),
     r"^data\.val_from='valid': expected 'train' \(carve data\.val_size from the training pool\) or 'test' "
     r"\(from the test split\)$"),
    (dict(val_from="test", val_size=20), stand_in(2, 20, 20),
     r"^data\.val_size=20: cannot carve a split of that size from 20 samples: "),
    (dict(val_from="test", val_size=0), stand_in(2, 20, 20), r"^the validation split of the dataset is empty$"),
    (dict(val_from="test", val_size=4), with_val_split(),
     r"^data\.val_from=test: the dataset has a validation split of its own \(use data\.val_from=train\)$"),
])
def test_val_from_errors_are_one_line(options, source, message):
    with pytest.raises(SSLTrainError, match=message) as error:
        SSLDataModule(lambda: source, num_labels=4, **options).setup()
    assert "\n" not in str(error.value)


def test_val_from_is_a_data_option_of_the_command_line():
    with pytest.raises(SSLTrainError, match=r"^data\.val_from='dev': expected 'train' "):
        build_datamodule(composed("data.val_from=dev").data)
    assert composed().data.val_from == "train"  # the default keeps validation carved from the training pool
