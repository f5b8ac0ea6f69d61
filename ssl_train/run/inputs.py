"""New images for a trained model: folders of image files, or .npy/.pt arrays of pixels (ssl-predict, ssl-monitor).

Everything that can be checked before any work is checked up front (missing paths, unsupported files,
empty inputs, shapes and channel counts against the model, unreadable image files: all named in one
line), so a bad input fails fast. Values (NaN, pixels outside [0, 1]) are checked per chunk as the input
streams; a tool writes its outputs only once the whole input has been read, so a failure never leaves or
replaces a result.

Arrays are memory-mapped (`np.load(mmap_mode="r")`, `torch.load(mmap=True)`) and image files decoded
a chunk at a time, so memory stays bounded by the chunk size whatever the input size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ssl_train.data.datasets import IMAGE_EXTENSIONS, read_image
from ssl_train.errors import SSLTrainError, first_line

ARRAY_SUFFIXES = (".npy", ".pt", ".pth")
_NAMED = 5  # how many offending files an error names before "and N more"
_BANDS = {"1": 1, "L": 1, "LA": 1, "I": 1, "I;16": 1, "F": 1, "RGB": 3, "RGBA": 3, "CMYK": 3, "YCbCr": 3}


@dataclass
class Source:
    """One input path: an array (memory-mapped) or a sorted list of image files."""

    path: Path
    kind: str  # "folder" or "array"
    count: int
    files: list[Path] = field(default_factory=list)
    array: object = None  # np.memmap / np.ndarray / torch.Tensor
    layout: str = "NCHW"  # arrays: "NCHW", "NHWC" or "NHW"

    def names(self, start: int, stop: int) -> list:
        """Sample names: file paths relative to the folder (with /), or row indices of an array."""
        if self.kind == "array":
            return list(range(start, stop))
        return [f.relative_to(self.path).as_posix() for f in self.files[start:stop]]


class Inputs:
    """The input sequence: the samples of each path in order (files sorted by path within a folder).

    Args:
        paths: folders, .npy or .pt files.
        input_shape: the model's C×H×W.
        resize: decode image files resized and converted to the model's shape and channels (what
            `data=image_folder` training does); when False a file of another size or channel count is an error.

    Arrays hold float pixels in [0, 1] as N×C×H×W; with `image_arrays` (the default) also uint8 pixels
    (divided by 255, as image files are) and images as stored, N×H×W×C or N×H×W (grayscale). The class
    attributes word the errors; a tool may reword them (ssl_train/monitor/inputs.py).
    """

    against = "model"           # "... differs from the model", "N×1×8×8 for this model"
    model = "the model"         # "... the model takes 1×8×8"
    resize_option = "resize"    # the option that resizes image files
    image_arrays = True         # uint8 arrays and N×H×W(×C) layouts too

    def __init__(self, paths: str | Path | list, input_shape: tuple[int, int, int], resize: bool = False):
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise SSLTrainError("input: no input path given")
        self.input_shape, self.resize = tuple(input_shape), resize
        self.sources = [self._open(Path(p)) for p in paths]

    @property
    def total(self) -> int:
        return sum(s.count for s in self.sources)

    def describe(self) -> list[dict]:
        return [{"path": str(s.path), "kind": s.kind, "samples": s.count} for s in self.sources]

    # --- opening and up-front checks ----------------------------------------------------------------------------------
    def _open(self, path: Path) -> Source:
        if path.is_dir():
            return self._open_folder(path)
        if not path.exists():
            raise SSLTrainError(f"input={path}: no such file or directory")
        if path.suffix.lower() not in ARRAY_SUFFIXES:
            raise SSLTrainError(f"input={path}: expected a folder of images or a .npy/.pt file of "
                                f"{self._layouts()} pixels")
        array = self._load_array(path)
        shape = tuple(array.shape)
        layout = self._layout(shape)
        if layout is None:
            self._shape_error(path, shape)
        if shape[0] == 0:
            raise SSLTrainError(f"input={path}: the array holds no samples (N = 0)")
        dtype = array.dtype
        if isinstance(array, Tensor):
            floating, bytes_ = dtype.is_floating_point, dtype == torch.uint8
        else:
            floating, bytes_ = np.issubdtype(dtype, np.floating), dtype == np.uint8
        if not floating and not (self.image_arrays and bytes_):
            raise SSLTrainError(f"input={path}: {dtype} array, expected float pixels in [0, 1]"
                                + (" or uint8 pixels" if self.image_arrays else " (for 8-bit images divide by 255)"))
        return Source(path, "array", shape[0], array=array, layout=layout)

    def _layouts(self) -> str:
        return "N×C×H×W, N×H×W×C or N×H×W" if self.image_arrays else "N×C×H×W"

    def _layout(self, shape: tuple[int, ...]) -> str | None:
        channels, height, width = self.input_shape
        if shape[1:] == self.input_shape:
            return "NCHW"
        if self.image_arrays and shape[1:] == (height, width, channels):
            return "NHWC"
        if self.image_arrays and channels == 1 and shape[1:] == (height, width):
            return "NHW"
        return None

    def _shape_error(self, path: Path, shape: tuple[int, ...]) -> None:
        model = "×".join(map(str, self.input_shape))
        channels_last = self.image_arrays and len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3)
        if len(shape) == 4:  # read as C×H×W (or H×W×C where that is what it looks like)
            samples = (shape[3], shape[1], shape[2]) if channels_last else shape[1:]
        elif self.image_arrays and len(shape) == 3:
            samples = (1, *shape[1:])
        else:
            raise SSLTrainError(f"input={path}: array of shape {list(shape)}, expected {self._layouts()} "
                                f"(N×{model} for this {self.against})")
        what = "channel count" if samples[0] != self.input_shape[0] else "image size"
        raise SSLTrainError(f"input={path}: {what} differs from the {self.against}: samples are "
                            f"{'×'.join(map(str, samples))}, {self.model} takes {model} (C×H×W)")

    @staticmethod
    def _load_array(path: Path):
        try:
            if path.suffix.lower() == ".npy":
                return np.load(path, mmap_mode="r", allow_pickle=False)
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # corrupt, truncated, pickled objects
            raise SSLTrainError(f"input={path} is not a readable {path.suffix} array ({first_line(exc)})") from None
        if isinstance(data, np.ndarray):
            return data
        if not isinstance(data, Tensor):
            raise SSLTrainError(f"input={path} holds a {type(data).__name__}, expected one N×C×H×W tensor")
        return data

    def _open_folder(self, path: Path) -> Source:
        from PIL import Image

        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise SSLTrainError(f"input={path}: the folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        channels, height, width = self.input_shape
        unreadable, mismatched = [], []
        for file in files:
            try:
                with Image.open(file) as img:
                    img.verify()  # structure only: cheap
                    size, mode = img.size, img.mode
            except Exception:
                unreadable.append(file)
                continue
            bands = _BANDS.get(mode)
            if not self.resize and (size != (width, height) or (bands is not None and bands != channels)):
                mismatched.append(f"{file} ({size[1]}×{size[0]}, {mode})")
        if unreadable:
            raise SSLTrainError(f"input={path}: {len(unreadable)} unreadable image file"
                                f"{'s' if len(unreadable) > 1 else ''}: {_names(unreadable)}")
        if mismatched:
            raise SSLTrainError(
                f"input={path}: {len(mismatched)} image{'s' if len(mismatched) > 1 else ''} not "
                f"{height}×{width} with {channels} channel{'s' if channels > 1 else ''} as {self.model} "
                f"takes: {_names(mismatched)} ({self.resize_option}=true resizes and converts them as image_folder "
                f"training does)")
        return Source(path, "folder", len(files), files=files)

    # --- streaming ----------------------------------------------------------------------------------------------------
    def spans(self, batch_size: int) -> list[tuple[int, int, int]]:
        """(source index, start, stop) of every chunk of at most `batch_size` samples, in order."""
        return [(k, start, min(start + batch_size, source.count)) for k, source in enumerate(self.sources)
                for start in range(0, source.count, batch_size)]

    def read(self, k: int, start: int, stop: int) -> Tensor:
        """Samples start:stop of source `k` as float32 N×C×H×W pixels in [0, 1]."""
        channels, height, width = self.input_shape
        source = self.sources[k]
        if source.kind == "folder":
            x = torch.stack([read_image(f, channels, (height, width)) for f in source.files[start:stop]])
            return (x.float() / 255.0).contiguous()
        part = source.array[start:stop]
        x = torch.from_numpy(np.array(part)) if isinstance(part, np.ndarray) else part.clone()
        if source.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        elif source.layout == "NHW":
            x = x[:, None]
        if x.dtype == torch.uint8:
            return (x.float() / 255.0).contiguous()
        x = x.to(torch.float32).contiguous()
        _check_values(x, source.path, start)
        return x

    def chunks(self, batch_size: int) -> Iterator[tuple[Tensor, int, int]]:
        """(float32 pixels, source index, first sample's position in the source), `batch_size` at a time."""
        for k, start, stop in self.spans(batch_size):
            yield self.read(k, start, stop), k, start


def _check_values(x: Tensor, path: Path, start: int) -> None:
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).flatten(1).any(1).nonzero()[0]) + start
        raise SSLTrainError(f"input={path}: non-finite pixel values (NaN or inf), first in sample {bad}")
    low, high = float(x.min()), float(x.max())
    if low < -1e-6 or high > 1 + 1e-6:
        bad = int(((x < -1e-6) | (x > 1 + 1e-6)).flatten(1).any(1).nonzero()[0]) + start
        raise SSLTrainError(f"input={path}: pixel values outside [0, 1] (sample {bad}; this chunk spans "
                            f"{low:g} to {high:g}): scale pixels to [0, 1]")


def _names(items: list) -> str:
    shown = ", ".join(str(i) for i in items[:_NAMED])
    return shown + (f" and {len(items) - _NAMED} more" if len(items) > _NAMED else "")
