"""Reading what ssl-monitor is given: arrays and image folders, and every bad input as one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_train.errors import SSLTrainError
from ssl_train.monitor.inputs import Inputs

SHAPE = (1, 8, 8)


def save_png(path, size=(8, 8), mode="L", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = size if mode == "L" else (*size, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=None).convert(mode).save(path)
    return path


def test_arrays_stream_in_chunks_as_float_pixels(tmp_path):
    x = np.random.default_rng(0).random((10, *SHAPE), dtype=np.float32)
    np.save(tmp_path / "a.npy", x)
    torch.save(torch.from_numpy(x[:3]).double(), tmp_path / "b.pt")
    inputs = Inputs([tmp_path / "a.npy", tmp_path / "b.pt"], SHAPE)
    chunks = list(inputs.chunks(4))
    assert inputs.total == 13 and [(len(c), k, s) for c, k, s in chunks] == [(4, 0, 0), (4, 0, 4), (2, 0, 8),
                                                                              (3, 1, 0)]
    assert all(c.dtype == torch.float32 for c, _, _ in chunks)
    assert torch.equal(torch.cat([c for c, k, _ in chunks if k == 0]), torch.from_numpy(x))


def test_image_folder_is_read_sorted_and_scaled(tmp_path):
    for name in ("b.png", "a.png", "sub/c.png"):
        save_png(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    inputs = Inputs(tmp_path / "imgs", SHAPE)
    assert [p.name for p in inputs.sources[0].files] == ["a.png", "b.png", "c.png"]
    x = next(inputs.chunks(10))[0]
    expected = np.asarray(Image.open(tmp_path / "imgs" / "a.png"), dtype=np.float32) / 255
    assert x.shape == (3, *SHAPE) and np.allclose(x[0, 0].numpy(), expected)


def test_resize_converts_other_sizes_and_modes_as_image_folder_training_does(tmp_path):
    save_png(tmp_path / "imgs" / "big.png", size=(20, 16), mode="RGB")
    with pytest.raises(SSLTrainError, match="monitor.resize=true"):
        Inputs(tmp_path / "imgs", SHAPE)
    x = next(Inputs(tmp_path / "imgs", SHAPE, resize=True).chunks(4))[0]
    assert x.shape == (1, *SHAPE)


def bad_input(case: str, tmp):
    """(path given, text the one-line error must contain) for each way an input can be wrong."""
    rng = np.random.default_rng(0)
    if case == "missing":
        return tmp / "nowhere.npy", "no such file or directory"
    if case == "unsupported file":
        (tmp / "data.csv").write_text("1,2,3\n")
        return tmp / "data.csv", "expected a folder of images or a .npy/.pt file"
    if case == "empty folder":
        (tmp / "empty").mkdir()
        return tmp / "empty", "the folder holds no image files"
    if case == "corrupt images":
        save_png(tmp / "imgs" / "good.png")
        for name in ("bad1.png", "bad2.jpg"):
            (tmp / "imgs" / name).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        return tmp / "imgs", f"2 unreadable image files: {tmp / 'imgs' / 'bad1.png'}, {tmp / 'imgs' / 'bad2.jpg'}"
    if case == "image of another size":
        save_png(tmp / "imgs" / "big.png", size=(28, 28))
        return tmp / "imgs", f"{tmp / 'imgs' / 'big.png'} (28×28, L)"
    if case == "color image for a grayscale model":
        save_png(tmp / "imgs" / "rgb.png", mode="RGB")
        return tmp / "imgs", f"{tmp / 'imgs' / 'rgb.png'} (8×8, RGB)"
    if case == "empty array":
        np.save(tmp / "x.npy", np.zeros((0, *SHAPE), np.float32))
        return tmp / "x.npy", "holds no samples"
    if case == "channel mismatch":
        np.save(tmp / "x.npy", rng.random((5, 3, 8, 8), dtype=np.float32))
        return tmp / "x.npy", ("channel count differs from the reference: samples are 3×8×8, "
                               "the reference model takes 1×8×8")
    if case == "size mismatch":
        torch.save(torch.rand(5, 1, 16, 16), tmp / "x.pt")
        return tmp / "x.pt", "image size differs from the reference: samples are 1×16×16"
    if case == "not N×C×H×W":
        np.save(tmp / "x.npy", rng.random((5, 8, 8), dtype=np.float32))
        return tmp / "x.npy", "array of shape [5, 8, 8], expected N×C×H×W (N×1×8×8 for this reference)"
    if case == "integer pixels":
        np.save(tmp / "x.npy", np.full((5, *SHAPE), 200, np.uint8))
        return tmp / "x.npy", "uint8 array, expected float pixels in [0, 1]"
    if case == "corrupt array":
        (tmp / "x.npy").write_bytes(b"\x93NUMPY truncated")
        return tmp / "x.npy", "is not a readable .npy array"
    if case == "not a tensor":
        torch.save({"x": torch.rand(5, *SHAPE)}, tmp / "x.pt")
        return tmp / "x.pt", "holds a dict, expected one N×C×H×W tensor"
    raise KeyError(case)


@pytest.mark.parametrize("case", ["missing", "unsupported file", "empty folder", "corrupt images",
                                  "image of another size", "color image for a grayscale model", "empty array",
                                  "channel mismatch", "size mismatch", "not N×C×H×W", "integer pixels",
                                  "corrupt array", "not a tensor"])
def test_bad_input_is_one_line_naming_it(tmp_path, case):
    path, message = bad_input(case, tmp_path)
    with pytest.raises(SSLTrainError) as error:
        Inputs([path], SHAPE)
    text = str(error.value)
    assert len(text.splitlines()) == 1 and str(path) in text and message in text, text


@pytest.mark.parametrize("value, message", [(float("nan"), "non-finite pixel values (NaN or inf), first in sample 6"),
                                            (255.0, "pixel values outside [0, 1] (sample 6")])
def test_bad_values_are_found_while_streaming_and_named(tmp_path, value, message):
    x = np.random.default_rng(0).random((9, *SHAPE), dtype=np.float32)
    x[6, 0, 3, 3] = value
    np.save(tmp_path / "x.npy", x)
    inputs = Inputs(tmp_path / "x.npy", SHAPE)  # opens fine: values are checked as they stream
    with pytest.raises(SSLTrainError) as error:
        list(inputs.chunks(4))
    assert str(tmp_path / "x.npy") in str(error.value) and message in str(error.value)
