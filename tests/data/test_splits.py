import numpy as np
import pytest

from ssl_train.data.splits import index_stream, make_splits
from ssl_train.errors import SSLTrainError

LABELS = np.repeat(np.arange(10), 50)


def test_labeled_set_is_balanced_and_all_splits_disjoint():
    s = make_splits(LABELS, 10, 40, seed=3, val_size=0.1, test_size=0.2)
    assert np.bincount(LABELS[s.labeled], minlength=10).tolist() == [4] * 10
    parts = [set(s.labeled), set(s.unlabeled), set(s.val), set(s.test)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not parts[i] & parts[j]
    assert sum(map(len, parts)) == len(LABELS)


def test_splits_are_fixed_by_the_seed():
    a, b, c = (make_splits(LABELS, 10, 20, seed=s, val_size=0.1, test_size=0.2) for s in (1, 1, 2))
    assert np.array_equal(a.labeled, b.labeled) and np.array_equal(a.test, b.test)
    assert not np.array_equal(a.labeled, c.labeled)


def test_labeled_samples_can_join_the_unlabeled_pool():
    s = make_splits(LABELS, 10, 20, seed=0, include_labeled_in_unlabeled=True)
    assert set(s.labeled) <= set(s.unlabeled)


@pytest.mark.parametrize("num_labels, message", [(41, "multiple of the class count"),
                                                 (0, "multiple of the class count"),
                                                 (600, "holds only")])
def test_bad_label_budgets_are_clear_errors(num_labels, message):
    with pytest.raises(SSLTrainError, match=message):
        make_splits(LABELS, 10, num_labels, seed=0)


def test_index_stream_is_a_sequence_of_permutations_and_windows_agree():
    whole = index_stream(7, 0, 21, (5,))
    for k in range(3):
        assert sorted(whole[7 * k:7 * (k + 1)]) == list(range(7))
    assert np.array_equal(index_stream(7, 5, 10, (5,)), whole[5:15])


def test_a_class_with_one_sample_stays_in_training_and_a_warning_names_it(caplog):
    labels = np.array([0] * 10 + [1] * 10 + [2])  # class 2 ("seven") has a single labeled image
    s = make_splits(labels, 3, None, seed=0, val_size=0.2, classes=["five", "six", "seven"],
                    own_split={"val": "ROOT/val/<class>/"})
    assert 20 in s.labeled and 20 not in s.val
    assert np.bincount(labels[s.val], minlength=3).tolist() == [2, 2, 0]
    assert sorted(np.concatenate([s.labeled, s.val]).tolist()) == list(range(21))
    assert ("data.val_size=0.2: class 'seven' has 1 sample: kept in training, so the carved split has none of it "
            "(ROOT/val/<class>/)") in caplog.text


def test_no_class_with_two_samples_is_a_clear_error():
    with pytest.raises(SSLTrainError, match=r"^data\.test_size=0\.5: no class has two samples to carve a split "
                                            r"from \(each class of the 3 samples has one\)$"):
        make_splits(np.arange(3), 3, None, seed=0, test_size=0.5)
