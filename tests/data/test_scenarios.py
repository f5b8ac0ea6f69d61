import numpy as np
import pytest

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import digits
from ssl_train.data.scenarios import UNSEEN, Imbalance, allocate, long_tail_profile, pool_counts, seen_classes
from ssl_train.data.splits import make_splits
from ssl_train.errors import SSLTrainError

LABELS = np.repeat(np.arange(5), 100)


def test_long_tail_profile_runs_from_one_to_one_over_the_ratio():
    profile = long_tail_profile(5, 16)
    assert profile.tolist() == [1, 0.5, 0.25, 0.125, 0.0625]
    assert long_tail_profile(5, 16, reverse=True).tolist() == profile[::-1].tolist()


def test_allocate_sums_to_the_total_and_gives_every_class_one():
    counts = allocate(20, np.array([8, 4, 2, 1, 0.01]), "n")
    assert counts.sum() == 20 and counts.min() >= 1 and list(counts) == sorted(counts, reverse=True)
    with pytest.raises(SSLTrainError, match="each of the 5 classes"):
        allocate(4, np.ones(5), "n")


def test_pool_counts_is_the_largest_pool_of_that_profile():
    assert pool_counts(np.array([100, 100, 100]), 4, False).tolist() == [100, 50, 25]
    assert pool_counts(np.array([100, 100, 10]), 4, False).tolist() == [40, 20, 10]  # the tail class limits it
    assert pool_counts(np.array([100, 60, 100]), 1, False).tolist() == [60, 60, 60]  # ratio 1: uniform


def test_imbalance_shapes_the_labeled_draw_and_the_pool_separately():
    consistent = make_splits(LABELS, 5, 31, seed=0, imbalance=Imbalance(labeled=16, unlabeled=16))
    reversed_ = make_splits(LABELS, 5, 31, seed=0, imbalance=Imbalance(16, 16, reverse_unlabeled=True))
    lab = np.bincount(LABELS[consistent.labeled])
    assert lab.sum() == 31 and lab[0] > lab[-1] and np.array_equal(consistent.labeled, reversed_.labeled)
    unl, rev = np.bincount(LABELS[consistent.unlabeled]), np.bincount(LABELS[reversed_.unlabeled])
    assert unl[0] / unl[-1] >= 15 and rev[-1] / rev[0] >= 15
    assert not set(consistent.labeled) & set(consistent.unlabeled)


def test_proportional_draw_follows_the_pool():
    labels = np.repeat(np.arange(3), [300, 100, 100])
    s = make_splits(labels, 3, 50, seed=0, label_draw="proportional")
    assert np.bincount(labels[s.labeled]).tolist() == [30, 10, 10]
    with pytest.raises(SSLTrainError, match="choose one"):
        make_splits(labels, 3, 50, seed=0, label_draw="proportional", imbalance=Imbalance(labeled=10))


def test_open_set_keeps_unseen_classes_in_the_pool_and_the_test_split_only():
    dm = SSLDataModule(digits, num_labels=24, open_set=[0, 1, 2, 3, 4, 5])
    dm.setup()
    assert dm.source.classes == ["0", "1", "2", "3", "4", "5"] and dm.num_classes == 6
    assert set(dm.labeled.labels) == set(range(6)) and len(dm.labeled) == 24
    assert set(dm.val.labels) == set(range(6))
    for split in (dm.unlabeled, dm.test):
        assert (split.labels == UNSEEN).sum() > 0.3 * len(split)
    assert dm.source.meta["unseen_classes"] == ["6", "7", "8", "9"]
    assert "of unseen classes" in dm.describe_splits(True)
    rebuilt = SSLDataModule(digits, **{k: v for k, v in dm.to_config().items()
                                       if k in ("num_labels", "open_set", "label_draw", "imbalance")})
    rebuilt.setup()
    assert np.array_equal(rebuilt.labeled.indices, dm.labeled.indices)


@pytest.mark.parametrize("open_set, message", [([0], "at least 2"), (list(range(10)), "fewer than all"),
                                               (["cat", 1], "'cat' is not a class"), ("0,1", "a list")])
def test_bad_open_set_is_one_line(open_set, message):
    with pytest.raises(SSLTrainError, match=message):
        SSLDataModule(digits, num_labels=24, open_set=open_set).setup()


@pytest.mark.parametrize("imbalance, message", [({"labeled": 0.5}, "expected a number >= 1"),
                                                ({"tail": 3}, "expected null or"),
                                                ({"unlabeled": 2, "reverse_unlabeled": "yes"}, "true or false")])
def test_bad_imbalance_is_one_line(imbalance, message):
    with pytest.raises(SSLTrainError, match=message):
        SSLDataModule(digits, imbalance=imbalance)


def test_open_set_names_classes_by_index_where_names_are_not_numbers():
    assert seen_classes(["cat", "dog", "fox"], [0, "fox"]) == [0, 2]
