"""One streaming pass over a dataset's splits: compact records per image, never the pixels of the whole set.

Per image it keeps in memory: an id (file path, or `part[index]` for in-memory
data), its split and label, a 64-bit content hash of the decoded pixels at their
native size (exact duplicates: the same pixels under any file name or format)
and an 8×8 grayscale descriptor (near-duplicate candidates), about 250 bytes
with the id. A grayscale thumbnail of at most 32×32, made from the file's own
pixels (near-duplicate confirmation, `thumb_shape`), goes to a temporary file and is read back only for candidate
pairs; labeled images also keep 8×8 colour features for the label check.
Images are decoded a batch at a time.

Splits are visited labeled, unlabeled, val, test; an image in two of them (the
labeled set inside the unlabeled pool) is recorded once, under the first.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import FileImages
from ssl_train.data.samples import locate, sample_id
from ssl_train.errors import first_line

SPLITS = ("labeled", "unlabeled", "val", "test")
THUMB = 32       # thumbnail side (at most): near-duplicate confirmation
DESCRIPTOR = 8   # descriptor side: near-duplicate candidates
FEATURE = 8      # label-check features: FEATURE × FEATURE per channel
LUMA = torch.tensor([0.299, 0.587, 0.114])


@dataclass
class Scan:
    """Per-image records of every split, in visiting order; `close()` removes the thumbnail file."""

    ids: list[str] = field(default_factory=list)
    split: np.ndarray | list = field(default_factory=list)        # index into SPLITS
    label: np.ndarray | list = field(default_factory=list)        # -1: unknown
    hashes: np.ndarray | list = field(default_factory=list)
    descriptors: np.ndarray | list = field(default_factory=list)  # float16 N×64, zero-mean unit-norm
    features: np.ndarray | list = field(default_factory=list)     # labeled images only
    feature_rows: np.ndarray | list = field(default_factory=list)  # their record positions
    part: np.ndarray | list = field(default_factory=list)         # which of `sources` holds the image
    index: np.ndarray | list = field(default_factory=list)        # its index there
    sources: list = field(default_factory=list)
    scale: float = 1 / 255                                        # raw pixel value × scale ∈ [0, 1]
    unreadable: list[dict] = field(default_factory=list)
    thumb_shape: tuple[int, int] = (0, 0)
    thumb_path: Path | None = None
    image_shape: tuple[int, int, int] = (0, 0, 0)

    def finish(self) -> Scan:
        """Stack the per-batch arrays (once, after the last batch)."""
        self.split, self.label = np.asarray(self.split, np.int8), np.asarray(self.label, np.int64)
        self.part, self.index = np.asarray(self.part, np.int16), np.asarray(self.index, np.int64)
        self.hashes = np.concatenate(self.hashes) if self.hashes else np.zeros(0, np.uint64)
        self.descriptors = (np.concatenate(self.descriptors) if self.descriptors
                            else np.zeros((0, DESCRIPTOR * DESCRIPTOR), np.float16))
        self.features = np.concatenate(self.features) if self.features else np.zeros((0, 1), np.float16)
        self.feature_rows = np.asarray(self.feature_rows, np.int64)
        return self

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, rows: np.ndarray) -> Tensor:
        """Images of records `rows` as the model sees them (float N×C×H×W in [0, 1]), decoded again."""
        return torch.stack([self.sources[self.part[r]].load(np.array([self.index[r]]))[0] for r in rows]).float() \
            * self.scale

    def thumbs(self, rows: np.ndarray) -> Tensor:
        """Grayscale thumbnails (float h×w in [0, 1]) of records `rows`, read from the thumbnail file.

        The file is mapped only for this read, so pages read never stay resident.
        """
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            return torch.zeros((0, *self.thumb_shape))
        mapped = np.memmap(self.thumb_path, dtype=np.uint8, mode="r", shape=(len(self), *self.thumb_shape))
        try:
            out = torch.from_numpy(np.array(mapped[rows]))
        finally:
            del mapped
        return out.float() / 255

    def close(self) -> None:
        if self.thumb_path is not None:
            Path(self.thumb_path).unlink(missing_ok=True)
            self.thumb_path = None


def scan(datamodule: SSLDataModule, batch_size: int = 256) -> Scan:
    """Stream every image of the data module's labeled, unlabeled, val and test splits once."""
    fd, name = tempfile.mkstemp(prefix="ssl-audit-thumbs-", suffix=".u8")
    result = Scan(thumb_path=Path(name), image_shape=tuple(datamodule.input_shape), scale=datamodule.source.scale)
    result.thumb_shape = thumb_shape(datamodule)
    seen: dict[int, np.ndarray] = {}  # per source: which images were recorded already
    try:
        with os.fdopen(fd, "wb") as thumb_file:
            for split_number, split in enumerate(SPLITS):
                for part, source, indices in locate(datamodule, getattr(datamodule, split)):
                    if not any(source is known for known in result.sources):
                        result.sources.append(source)
                    done = seen.setdefault(id(source), np.zeros(len(source), bool))
                    fresh = [int(i) for i in indices if not done[i]]
                    done[fresh] = True
                    for start in range(0, len(fresh), batch_size):
                        _scan_batch(result, thumb_file, split_number, part, source, fresh[start:start + batch_size])
    except BaseException:
        result.close()
        raise
    return result.finish()


def thumb_shape(datamodule: SSLDataModule) -> tuple[int, int]:
    """The thumbnail size: at most THUMB, the size images are read at and the smallest file's own size.

    Thumbnails are made from the files' own pixels, so a copy shifted by one pixel of its file is shifted by at
    most one thumbnail pixel (what confirmation aligns) whatever `image_size` the model reads: 8×8 files read
    at 32×32 would otherwise differ by a 4-pixel shift. Finding the smallest file reads only headers.
    """
    from PIL import Image

    h, w = datamodule.input_shape[1:]
    h, w = min(THUMB, h), min(THUMB, w)
    for split in SPLITS:
        for _, source, indices in locate(datamodule, getattr(datamodule, split)):
            if isinstance(source, FileImages):
                for i in indices:
                    try:
                        with Image.open(source.paths[i]) as img:
                            width, height = img.size
                    except Exception:  # noqa: BLE001 - reported as unreadable by the scan itself
                        continue
                    h, w = min(h, height), min(w, width)
    return max(h, 1), max(w, 1)


def _scan_batch(result: Scan, thumb_file, split: int, part: str, source, indices: list[int]) -> None:
    if isinstance(source, FileImages):
        images, thumbs, hashes, kept = [], [], [], []
        for i in indices:
            try:
                native, resized = decode(source.paths[i], source.channels, source.size)
            except Exception as exc:  # PIL raises many types for corrupt files
                result.unreadable.append({"path": str(source.paths[i]), "split": SPLITS[split],
                                          "error": first_line(exc)})
                continue
            images.append(resized)
            thumbs.append(thumbnails(chw(native) * result.scale, result.thumb_shape))  # the file's pixels go now
            hashes.append(content_hash(native))
            kept.append(i)
        if not kept:
            return
        batch = torch.from_numpy(np.stack(images))
        thumbs = np.concatenate(thumbs)
    else:
        kept = indices
        batch = source.load(np.asarray(kept))
        hashes = [content_hash(x.numpy()) for x in batch]
        thumbs = thumbnails(batch.float() * result.scale, result.thumb_shape)
    first = len(result.ids)
    number = next(n for n, known in enumerate(result.sources) if known is source)
    result.part += [number] * len(kept)
    result.index += kept
    result.ids += [sample_id(part, source, i) for i in kept]
    result.split += [split] * len(kept)
    result.label += [int(source.labels[i]) for i in kept]
    result.hashes.append(np.asarray(hashes, np.uint64))
    pixels = batch.float() * result.scale
    thumb_file.write(thumbs.tobytes())
    result.descriptors.append(descriptors(torch.from_numpy(thumbs).float()).numpy().astype(np.float16))
    if SPLITS[split] == "labeled":
        result.features.append(label_features(pixels).astype(np.float16))
        result.feature_rows += range(first, first + len(kept))


def decode(path, channels: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(pixels at native size, C×H×W pixels resized as the data module resizes them), both uint8."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        native = np.asarray(img, dtype=np.uint8)
        resized = np.asarray(img.resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)
    resized = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    return native, np.ascontiguousarray(resized)


def chw(native: np.ndarray) -> Tensor:
    """A decoded file's H×W or H×W×C uint8 pixels as a float 1×C×H×W batch of one (raw values)."""
    x = torch.from_numpy(native).float()
    return (x[None] if x.ndim == 2 else x.permute(2, 0, 1))[None]


def content_hash(pixels: np.ndarray) -> np.uint64:
    """64-bit BLAKE2b of the pixel array and its shape: equal for the same pixels in any file format."""
    digest = hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=8,
                             person=str(pixels.shape).encode()[:16]).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def gray(x: Tensor) -> Tensor:
    """N×1×H×W luma of N×C×H×W images in [0, 1] (C = 3: ITU-R 601 weights; otherwise the channel mean)."""
    if x.shape[1] == 3:
        return (x * LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def thumbnails(x: Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Grayscale thumbnails of images in [0, 1], area-averaged to `shape`, as uint8 N×h×w."""
    return (F.adaptive_avg_pool2d(gray(x), shape)[:, 0] * 255).round().to(torch.uint8).numpy()


def descriptors(thumbs: Tensor) -> Tensor:
    """Zero-mean, unit-norm 8×8 area averages of N×h×w grayscale thumbnails (a flat image gives zeros).

    Subtracting the mean and normalizing makes the cosine similarity blind to brightness and contrast.
    """
    x = thumbs.float()[:, None]
    x = F.adaptive_avg_pool2d(x, (min(DESCRIPTOR, x.shape[-2]), min(DESCRIPTOR, x.shape[-1]))).flatten(1)
    return F.normalize(x - x.mean(1, keepdim=True), dim=1)


def label_features(x: Tensor) -> np.ndarray:
    """Colour pixels area-averaged to FEATURE × FEATURE: enough for a quick model to learn most classes."""
    return F.adaptive_avg_pool2d(x, (min(FEATURE, x.shape[-2]), min(FEATURE, x.shape[-1]))).flatten(1).numpy()
