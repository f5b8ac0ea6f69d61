import functools
import logging
import shutil

import numpy as np
import pytest
import torch

from ssl_train.data.augment import StrongAugment, WeakAugment
from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import digits, image_folder, synthetic
from ssl_train.errors import SSLTrainError


def datamodule(dataset=digits, **kw):
    options = dict(num_labels=20, batch_size=8, mu=3, seed=0, weak=WeakAugment(flip=False),
                   strong=StrongAugment(flip=False))
    dm = SSLDataModule(dataset, **(options | kw))
    dm.setup()
    return dm


def train_batch(dm, step):
    raw = dm.train_dataloader().dataset[step]
    return raw, dm.on_after_batch_transfer(raw, 0)


def test_training_batch_holds_labeled_and_requested_views():
    dm = datamodule()
    dm.views = ("weak", "strong", "weak2")
    raw, batch = train_batch(dm, 0)
    assert raw["lb"]["x"].dtype == torch.uint8 and raw["lb"]["x"].shape == (8, 1, 8, 8)
    assert set(batch["ulb"]) == {"weak", "strong", "weak2", "idx"}
    for view in ("weak", "strong", "weak2"):
        view = batch["ulb"][view]
        assert view.shape == (24, 1, 8, 8) and view.dtype == torch.float32 and 0 <= view.min() <= view.max() <= 1
    assert not torch.equal(batch["ulb"]["weak"], batch["ulb"]["weak2"])  # independent draws
    assert torch.isin(batch["lb"]["y"], torch.arange(10)).all()
    assert set(batch) >= {"lb", "ulb", "ulb_truth", "step"}


def test_training_batches_carry_the_samples_positions_in_their_split():
    """Per-sample state (FlexMatch's last confident predictions, SimMatch's labeled bank) is indexed by them."""
    dm = datamodule()
    raw, batch = train_batch(dm, 3)
    for part, split in (("lb", dm.labeled), ("ulb", dm.unlabeled)):
        idx = batch[part]["idx"]
        assert idx.dtype == torch.long and 0 <= idx.min() and idx.max() < len(split)
        assert torch.equal(raw[part]["x"], split[idx.numpy()]["x"])  # the positions name exactly these samples
    assert torch.equal(batch["ulb_truth"], torch.as_tensor(dm.unlabeled.labels[batch["ulb"]["idx"].numpy()]))


def test_a_batch_is_a_pure_function_of_seed_and_step():
    a, b = datamodule(), datamodule()
    (ra, ba), (rb, bb) = train_batch(a, 5), train_batch(b, 5)
    assert torch.equal(ra["ulb"]["x"], rb["ulb"]["x"]) and torch.equal(ba["ulb"]["strong"], bb["ulb"]["strong"])
    assert not torch.equal(train_batch(a, 6)[0]["ulb"]["x"], ra["ulb"]["x"])


def test_augmenting_in_the_loader_gives_the_same_batches_as_on_the_device():
    on_device, in_loader = datamodule(), datamodule(augment_on="loader", num_workers=1)
    loader = iter(in_loader.train_dataloader())  # a worker process builds the views
    for step in range(3):
        expected = train_batch(on_device, step)[1]
        got = in_loader.on_after_batch_transfer(next(loader), 0)
        assert got["lb"]["x"].dtype == torch.float32
        for key in ("weak", "strong"):
            assert torch.equal(got["ulb"][key], expected["ulb"][key])
        assert torch.equal(got["lb"]["x"], expected["lb"]["x"]) and torch.equal(got["lb"]["y"], expected["lb"]["y"])


def test_unknown_augment_place_is_a_clear_error():
    with pytest.raises(SSLTrainError, match="data.augment_on='gpu'"):
        SSLDataModule(digits, augment_on="gpu")


def test_labeled_batches_cycle_through_every_labeled_sample():
    dm = datamodule(num_labels=20, batch_size=10)
    seen = torch.cat([dm.train_dataloader().dataset[s]["lb"]["y"] for s in range(2)])
    assert np.bincount(seen.numpy(), minlength=10).tolist() == [2] * 10


def test_supervised_needs_no_unlabeled_batch():
    dm = datamodule()
    dm.views = ()
    assert "ulb" not in dm.train_dataloader().dataset[0]


def test_eval_batches_are_scaled_to_unit_range():
    dm = datamodule()
    batch = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert batch["x"].max() == 1.0 and len(dm.test) == 450  # digits: 16/16, 25% test split


def test_ranks_take_disjoint_slices_of_a_step():
    dm = datamodule()
    from ssl_train.data.datamodule import PairedSteps
    shards = [PairedSteps(dm.labeled, dm.unlabeled, 8, 24, 0, rank, 2)[3]["ulb"]["x"] for rank in (0, 1)]
    assert not torch.equal(shards[0], shards[1])


def test_synthetic_any_shape():
    dm = datamodule(lambda: synthetic(num_samples=300, num_classes=5, image_shape=(3, 16, 12)), num_labels=10)
    assert dm.input_shape == (3, 16, 12) and dm.num_classes == 5


def test_image_folder_reads_labeled_unlabeled_and_carves_val_test(image_root):
    dm = datamodule(lambda: image_folder(str(image_root), image_size=(16, 16)), num_labels=None,
                    val_size=2, test_size=2)
    assert dm.source.classes == ["cat", "dog"] and dm.input_shape == (3, 16, 16)
    assert len(dm.labeled) == 8 and len(dm.val) == 2 and len(dm.test) == 2 and len(dm.unlabeled) == 5
    assert (dm.unlabeled.labels == -1).all()
    raw, batch = train_batch(dm, 0)
    assert batch["ulb"]["strong"].shape == (24, 3, 16, 16)


def test_labeled_class_prior_is_the_labeled_class_frequencies(image_root):
    torch.testing.assert_close(datamodule(num_labels=20).labeled_class_prior(), torch.full((10,), 0.1))
    for png in list((image_root / "labeled" / "cat").glob("*.png"))[:4]:
        png.unlink()  # 2 cats, 6 dogs
    for split in ("val", "test"):  # splits of the folder's own: none is carved from the 8 labeled images
        for c in ("cat", "dog"):
            (image_root / split / c).mkdir(parents=True)
            shutil.copy(next((image_root / "labeled" / c).glob("*.png")), image_root / split / c / "0.png")
    dm = datamodule(lambda: image_folder(str(image_root), image_size=(16, 16)), num_labels=None)
    torch.testing.assert_close(dm.labeled_class_prior(), torch.tensor([0.25, 0.75]))


def test_a_folder_says_how_many_labeled_images_train_and_where_val_and_test_come_from(image_root, caplog):
    with caplog.at_level(logging.INFO, "ssl_train.data"):
        dm = datamodule(lambda: image_folder(str(image_root), image_size=(16, 16)), num_labels=None,
                        val_size=2, test_size=2)
    assert dm.split_sizes() == {"labeled": 8, "unlabeled": 5, "val": 2, "test": 2}
    assert ("data: 8 labeled training images, 5 unlabeled, 2 validation (carved: data.val_size=2) and 2 test "
            "(carved: data.test_size=2)") in caplog.text


def test_a_class_with_a_single_labeled_image_trains_and_the_others_give_val(image_root, caplog):
    (image_root / "labeled" / "owl").mkdir()
    shutil.copy(next((image_root / "labeled" / "cat").glob("*.png")), image_root / "labeled" / "owl" / "0.png")
    dm = datamodule(lambda: image_folder(str(image_root), image_size=(16, 16)), num_labels=None, val_size=2,
                    test_size=2)
    assert (dm.labeled.labels == 2).sum() == 1 and 2 not in dm.val.labels and 2 not in dm.test.labels
    assert "class 'owl' has 1 sample: kept in training" in caplog.text
    assert "ROOT/val/<class>/ for data=image_folder" in caplog.text


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_split_neither_carved_nor_the_datasets_own_is_an_error(split):
    """val_size=0 used to validate on the whole labeled training set (val/acc 1.000 from the first check)."""
    with pytest.raises(SSLTrainError, match=rf"^data\.{split}_size=0: the dataset has no {split} split of its own "
                                            rf"and none is carved, so .* would be the training images; carve one "
                                            rf"\(data\.{split}_size: a fraction or a count\) or give the dataset "
                                            rf"its own \(ROOT/{split}/<class>/ for data=image_folder"):
        datamodule(num_labels=None, **{f"{split}_size": 0})


def test_image_folder_bad_inputs(image_root, tmp_path):
    with pytest.raises(SSLTrainError, match="has no 'labeled' subfolder"):
        image_folder(str(tmp_path / "missing"))
    (image_root / "labeled" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SSLTrainError, match=r"unreadable image file .*broken\.png"):
        image_folder(str(image_root))
    with pytest.warns(UserWarning, match="broken.png"):
        assert len(image_folder(str(image_root), on_bad_image="skip").train) == 12
    (image_root / "labeled" / "bird").mkdir()
    with pytest.raises(SSLTrainError, match=r"class folder .*bird holds no readable images"):
        image_folder(str(image_root), on_bad_image="skip")


def test_bad_batch_size_is_a_clear_error():
    with pytest.raises(SSLTrainError, match="data.batch_size=0"):
        SSLDataModule(digits, batch_size=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_labels=0), r"^data\.num_labels=0: expected a positive integer \(a multiple of the class count\) or null"),
    (dict(num_labels="abc"), r"^data\.num_labels='abc': expected a positive integer"),
    (dict(mu=-1), r"^data\.mu=-1: expected an integer >= 0$"),
    (dict(batch_size=True), r"^data\.batch_size=True: expected a positive integer$"),
    (dict(eval_batch_size=2.5), r"^data\.eval_batch_size=2\.5: expected a positive integer$"),
    (dict(val_size=1.5), r"^data\.val_size=1\.5: expected a fraction in \[0, 1\) or a whole number of samples >= 0$"),
    (dict(test_size=-3), r"^data\.test_size=-3: expected a fraction in \[0, 1\)"),
    (dict(val_size="some"), r"^data\.val_size='some': expected a fraction"),
    (dict(include_labeled_in_unlabeled="yes"), r"^data\.include_labeled_in_unlabeled='yes': expected true or false$"),
    (dict(seed=-1), r"^data\.seed=-1: expected an integer >= 0"),
    (dict(num_workers=-1), r"^data\.num_workers=-1: expected an integer >= 0"),
    (dict(prefetch_factor=0), r"^data\.prefetch_factor=0: expected a positive integer$"),
    (dict(weak="flip"), r"^data\.weak: expected an augmentation module"),
    (dict(dataset=digits()), r"^data\.dataset: expected a dataset source function \(a _target_ with _partial_: true\)"),
    (dict(dataset=functools.partial(synthetic, nope=1)),
     r"^data\.dataset: synthetic: got an unexpected keyword argument 'nope'$"),
])
def test_bad_data_options_name_the_config_key(kwargs, message):
    options = dict(dataset=digits) | kwargs
    with pytest.raises(SSLTrainError, match=message):
        SSLDataModule(options.pop("dataset"), **options)


def test_a_split_too_large_to_carve_names_its_key():
    with pytest.raises(SSLTrainError, match=r"^data\.val_size=5000: cannot carve a split of that size from \d+ "):
        datamodule(val_size=5000)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_samples=0), r"^data\.dataset\.num_samples=0: expected a positive integer$"),
    (dict(num_classes="ten"), r"^data\.dataset\.num_classes='ten': expected a positive integer$"),
    (dict(image_shape=(3, 32)), r"^data\.dataset\.image_shape=\[3, 32\]: expected 3 positive integers"),
    (dict(image_shape=(3, 0, 8)), r"^data\.dataset\.image_shape=\[3, 0, 8\]: expected 3 positive integers"),
    (dict(image_shape=(2, 8, 8)), r"^data\.dataset\.image_shape\[0\]=2: expected 1 \(grayscale\) or 3 \(RGB\)$"),
    (dict(noise=-0.1), r"^data\.dataset\.noise=-0\.1: expected a number >= 0"),
    (dict(seed=0.5), r"^data\.dataset\.seed=0\.5: expected an integer$"),
])
def test_bad_synthetic_options_name_the_config_key(kwargs, message):
    with pytest.raises(SSLTrainError, match=message):
        synthetic(**kwargs)


def test_bad_image_folder_options_name_the_config_key(image_root):
    with pytest.raises(SSLTrainError, match=r"^data\.dataset\.channels=4: expected 1 \(grayscale\) or 3 \(RGB\)$"):
        image_folder(str(image_root), channels=4)
    with pytest.raises(SSLTrainError, match=r"^data\.dataset\.image_size=\[32\]: expected 2 positive integers"):
        image_folder(str(image_root), image_size=[32])
