"""Exact and near duplicates, within and across splits, and the leakage they cause.

Exact: equal 64-bit content hashes of the decoded pixels.

Near, in two steps:
1. Candidates: each image's nearest neighbours (cosine similarity of 8×8
   zero-mean grayscale descriptors: blind to brightness and contrast) among one
   representative per exact-duplicate group. For small images (side ≤ 16) a
   one-pixel shift moves every descriptor value, so the query is repeated for
   the image shifted by one pixel in each of the 8 directions. The search is
   exact and batched: O(N²) multiply-adds on 64-dimensional vectors.
2. Confirmation, on grayscale thumbnails of at most 32×32: a pair is a near
   duplicate when, after the best alignment by at most one pixel and the best
   brightness/contrast fit of one image to the other (gain in [0.5, 2], then
   clipped to [0, 1], so saturated pixels fit too), the RMS pixel difference is
   at most `max_rms` (pixels in [0, 1]) and at most `max_relative` of the
   image's own contrast (its standard deviation). Shifted, re-encoded, slightly
   noisy, brightened or darkened copies pass; two different images of the same
   kind of thing, or two different flat ones, do not.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def exact_groups(hashes: np.ndarray) -> list[np.ndarray]:
    """Positions sharing a content hash, one array per group of two or more, each sorted."""
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    bounds = np.flatnonzero(np.diff(sorted_hashes)) + 1
    return [np.sort(g) for g in np.split(order, bounds) if len(g) > 1]


def shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """Images N×H×W moved by (dy, dx) pixels; the uncovered border repeats the nearest edge."""
    if dy == dx == 0:
        return x
    h, w = x.shape[-2:]
    rows = (torch.arange(h) - dy).clamp(0, h - 1)
    cols = (torch.arange(w) - dx).clamp(0, w - 1)
    return x[..., rows, :][..., cols]


def near_candidates(descriptors: np.ndarray, rows: np.ndarray, neighbours: int = 5, min_cosine: float = 0.75,
                    shifted: Callable[[np.ndarray], list[Tensor]] | None = None,
                    max_block: int = 2 ** 22) -> np.ndarray:
    """Candidate pairs (i < j, record positions) among `rows`: each one's nearest neighbours above `min_cosine`.

    `descriptors` are unit vectors (cosine = dot product). `shifted(block)`, when given, returns the
    descriptors of the records `block` under each one-pixel shift, used as extra queries. Queries go in
    blocks whose similarity matrix holds at most `max_block` values (16 MiB), whatever the image count.
    """
    rows = np.asarray(rows)
    n = len(rows)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    chunk = int(np.clip(max_block // n, 8, 1024))
    base = torch.from_numpy(descriptors[rows].astype(np.float32))
    k = min(neighbours, n - 1)
    found = []
    # One similarity buffer for all blocks: a fresh 16 MiB matrix per query would raise glibc's mmap
    # threshold and fragment the heap, growing the process by gigabytes at 100k images.
    buffer = torch.empty(chunk, n)
    for start in range(0, n, chunk):
        block = np.arange(start, min(start + chunk, n))
        queries = shifted(rows[block]) if shifted is not None else [base[block]]
        for query in queries:
            sims = torch.matmul(query, base.T, out=buffer[:len(block)])
            sims[torch.arange(len(block)), torch.from_numpy(block)] = -2.0  # not its own neighbour
            values, cols = sims.topk(k, dim=1)
            keep = values >= min_cosine
            a = torch.from_numpy(block)[:, None].expand_as(cols)[keep]
            found.append(torch.stack([a, cols[keep]], 1))
    pairs = torch.cat(found).numpy()
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    return rows[np.unique(np.sort(pairs, axis=1), axis=0)]


def aligned_rms(a: Tensor, b: Tensor, max_shift: int = 1) -> tuple[Tensor, Tensor]:
    """Per pair: the smallest RMS of clip(gain·a + offset) − b over shifts ≤ `max_shift` and both fit directions,
    and that residual relative to the fitted image's contrast (its standard deviation).

    `a`, `b`: P×H×W grayscale in [0, 1]. Gain and offset are least squares over the pixels that are not
    saturated in the target (gain clamped to [0.5, 2]); the RMS is over the overlap of the two images. The
    relative residual (about √(1 − r²) for correlation r) keeps two different low-contrast images, whose
    absolute difference is small whatever they show, from passing as duplicates.
    """
    best = torch.full((len(a),), float("inf"))
    relative = torch.full((len(a),), float("inf"))
    h, w = a.shape[-2:]
    for dy, dx in itertools.product(range(-max_shift, max_shift + 1), repeat=2):
        if abs(dy) >= h or abs(dx) >= w:
            continue
        sa = a[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)].flatten(1)
        sb = b[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)].flatten(1)
        for x, y in ((sa, sb), (sb, sa)):
            rms, spread = _fit_rms(x, y)
            better = rms < best
            best = torch.where(better, rms, best)
            relative = torch.where(better, rms / spread.clamp_min(1e-3), relative)
    return best, relative


def _fit_rms(x: Tensor, y: Tensor, eps: float = 0.5 / 255) -> tuple[Tensor, Tensor]:
    """(RMS of clip(gain·x + offset, 0, 1) − y, the standard deviation of y), fitted where y is not saturated."""
    inside = ((y > eps) & (y < 1 - eps)).to(x.dtype)
    count = inside.sum(1)
    xm, ym = x * inside, y * inside
    sx, sy = xm.sum(1), ym.sum(1)
    n = count.clamp_min(1)
    cov = (xm * y).sum(1) - sx * sy / n
    var = (xm * x).sum(1) - sx * sx / n
    gain = torch.where((count >= 3) & (var > 1e-8), cov / var.clamp_min(1e-12), torch.ones_like(var)).clamp(0.5, 2.0)
    offset = torch.where(count > 0, (sy - gain * sx) / n, (y - x).mean(1))
    residual = torch.addcmul(offset[:, None], gain[:, None], x).clamp_(0, 1).sub_(y)
    return residual.pow_(2).mean(1).sqrt_(), y.std(1)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of `n` items linked by `pairs` (union-find)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = root(int(i)), root(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(n)])


def leakage(split: np.ndarray, pairs: np.ndarray, split_names: tuple[str, ...]) -> dict[str, int]:
    """Per evaluation split (val, test): how many of its images have a duplicate in an earlier split.

    Splits are ordered labeled, unlabeled, val, test: a val image is leaked when linked to a labeled or
    unlabeled image, a test image when linked to any of those three (links may run through other images).
    """
    if len(pairs) == 0:
        return {name: 0 for name in ("val", "test")}
    involved = np.unique(pairs)
    local = {int(r): k for k, r in enumerate(involved)}
    comp = components(len(involved), np.vectorize(local.get)(pairs))
    out = {}
    for name in ("val", "test"):
        s = split_names.index(name)
        earlier = np.zeros(comp.max() + 1, bool)
        np.logical_or.at(earlier, comp, split[involved] < s)
        out[name] = int(((split[involved] == s) & earlier[comp]).sum())
    return out
