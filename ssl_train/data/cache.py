"""A folder's images decoded once into a memory-mapped uint8 array, so that a batch is one slice, not B decodes.

An entry is `<cache_dir>/image_folder/<key>/`: `images.npy` (N×C×H×W uint8, one row per file in sorted
relative-path order; an unreadable file's row is zeros) and `index.json` (the files, which of them are
unreadable, the decode settings). The key hashes the sorted (relative path, size, mtime_ns) list with the
settings, so any change to the files names a new entry; the images' own folder is only read.

An entry is built in a hidden staging folder beside it and renamed into place whole, under a lock file: a
reader never sees half an entry, and of several processes that want the same entry at once (DDP ranks) one
builds it while the others wait and then read it. An entry that does not match its index (a truncated file,
a foreign one) is rebuilt. What is read back is data only: JSON and a `.npy` opened without pickle.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import multiprocessing
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssl_train.errors import SSLTrainError
from ssl_train.io import write_json_atomic

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the layout or the decode changes: old entries are then never matched
# Files per worker task. Fewer than two chunks decode in this process: a pool costs about as much to start as
# decoding a thousand small files.
MIN_CHUNK, MAX_CHUNK = 512, 2048


def default_cache_dir() -> Path:
    """$SSL_TRAIN_CACHE_DIR, else $XDG_CACHE_HOME/ssl_train, else ~/.cache/ssl_train."""
    if os.environ.get("SSL_TRAIN_CACHE_DIR"):
        return Path(os.environ["SSL_TRAIN_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "ssl_train"


@dataclass
class Entry:
    """An opened cache entry: `images` (read-only memmap) holds row `rows[path]` for each file."""

    path: Path
    images: np.ndarray
    rows: dict[Path, int]
    unreadable: set[Path]

    @property
    def file(self) -> Path:
        return self.path / "images.npy"


def open_cache(root: str | Path, paths: list[Path], shape: tuple[int, int, int], settings: dict,
               decode: Callable[[Path], np.ndarray | None], cache_dir: str | Path | None = None,
               workers: int | None = None) -> Entry:
    """The entry for `paths` (files under `root`) decoded by `decode` (C×H×W uint8 of `shape`, or None for an
    unreadable file), built first when missing or damaged. `settings` names what else the pixels depend on."""
    root = Path(root)
    prefix = os.path.join(str(root), "")  # slicing strings: Path.relative_to costs seconds on a big folder
    rel = {p: str(p)[len(prefix):] if str(p).startswith(prefix) else p.relative_to(root).as_posix() for p in paths}
    ordered = sorted(paths, key=rel.__getitem__)
    listing = [[rel[p], (s := p.stat()).st_size, s.st_mtime_ns] for p in ordered]
    key = hashlib.sha256(json.dumps({"format": FORMAT, "shape": list(shape), "settings": settings,
                                     "files": listing}, sort_keys=True).encode()).hexdigest()[:32]
    entries = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "image_folder"
    entry, full_shape = entries / key, (len(ordered), *shape)
    found = _read(entry, key, full_shape, listing)
    if found is None:
        with _locked(entries, key):
            found = _read(entry, key, full_shape, listing)  # another process may have built it meanwhile
            if found is None:
                try:
                    _build(entry, key, root, ordered, [f for f, _, _ in listing], shape, settings, decode, workers)
                except OSError as exc:  # a full disk, most likely
                    raise SSLTrainError(f"image cache entry {entry}: cannot write it ({exc.strerror or exc}); "
                                        "free space there, set data.dataset.cache_dir elsewhere, or "
                                        "data.dataset.cache=false") from None
                found = _read(entry, key, full_shape, listing)
        if found is None:
            raise SSLTrainError(f"image cache entry {entry} cannot be read back after building it")
    images, index = found
    by_rel = {rel[p]: p for p in ordered}
    log.info("image cache: %d images of %s from %s", len(ordered), root, entry)
    return Entry(entry, images, {p: i for i, p in enumerate(ordered)}, {by_rel[f] for f in index["unreadable"]})


def _read(entry: Path, key: str, shape: tuple[int, ...], listing: list) -> tuple[np.ndarray, dict] | None:
    """The entry's images (memmap) and index when complete and made from `listing`, else None."""
    file = entry / "images.npy"
    try:
        index = json.loads((entry / "index.json").read_text())
        images = np.load(file, mmap_mode="r", allow_pickle=False)
        files = [f for f, _, _ in listing]
        complete = (isinstance(index, dict) and index.get("key") == key and index.get("files") == files
                    and isinstance(index.get("unreadable"), list) and set(index["unreadable"]) <= set(files)
                    and images.dtype == np.uint8 and images.shape == shape
                    and file.stat().st_size == images.offset + images.nbytes)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError, TypeError) as exc:  # ValueError: a truncated array, a bad header, bad JSON
        log.warning("image cache entry %s is damaged (%s): rebuilding it", entry, exc)
        return None
    if not complete:
        log.warning("image cache entry %s does not match its index: rebuilding it", entry)
        return None
    return images, index


@contextlib.contextmanager
def _locked(entries: Path, key: str) -> Iterator[None]:
    """Hold the entry's lock file (waiting, with a log line, while another process builds it)."""
    try:
        entries.mkdir(parents=True, exist_ok=True)
        f = open(entries / f"{key}.lock", "a")
    except OSError as exc:
        raise SSLTrainError(f"image cache folder {entries} is not writable ({exc.strerror or exc}): set "
                            "data.dataset.cache_dir to a writable folder, or data.dataset.cache=false") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("image cache: waiting for another process that is building %s", entries / key)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(entry: Path, key: str, root: Path, paths: list[Path], files: list[str], shape: tuple[int, int, int],
           settings: dict, decode: Callable[[Path], np.ndarray | None], workers: int | None) -> None:
    """Decode every file into a staging folder, then rename it to `entry` (called holding the entry's lock)."""
    for leftover in [*entry.parent.glob(f".{key}.*.tmp"), *([entry] if entry.exists() else [])]:
        shutil.rmtree(leftover)  # a damaged entry, or the staging folder of a builder that was killed
    staging = entry.parent / f".{key}.{secrets.token_hex(8)}.tmp"
    staging.mkdir()
    try:
        start = time.perf_counter()
        np.lib.format.open_memmap(staging / "images.npy", mode="w+", dtype=np.uint8, shape=(len(paths), *shape))
        workers = workers or usable_cpus()
        bad = _decode_all(staging / "images.npy", paths, decode, workers)
        seconds = time.perf_counter() - start
        write_json_atomic(staging / "index.json", {
            "key": key, "format": FORMAT, "root": str(root.resolve()), "shape": [len(paths), *shape],
            "settings": settings, "files": files, "unreadable": [files[i] for i in bad],
            "build": {"seconds": round(seconds, 3), "workers": workers}})
        try:
            os.rename(staging, entry)
        except OSError:
            if not entry.is_dir():
                raise  # else another builder's entry is in place (a lock some network file systems ignore)
        log.info("image cache: decoded %d files in %.1f s (workers=%d) into %s", len(paths), seconds, workers, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which batch schedulers set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _decode_all(file: Path, paths: list[Path], decode: Callable[[Path], np.ndarray | None], workers: int) -> list[int]:
    """Decode `paths` into the rows of the .npy `file`, in `workers` processes; the rows of unreadable files."""
    size = max(MIN_CHUNK, min(MAX_CHUNK, math.ceil(len(paths) / (8 * workers))))
    chunks = [(file, start, paths[start:start + size], decode) for start in range(0, len(paths), size)]
    progress = _Progress(len(paths))
    bad: list[int] = []
    try:
        if workers == 1 or len(chunks) == 1:
            for chunk in chunks:
                bad += _decode_rows(*chunk)
                progress.update(len(chunk[2]))
            return bad
        # fork: a worker inherits the loaded modules (a spawned one would import torch again, seconds each);
        # it runs only PIL and numpy.
        context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
            try:
                for chunk, rows in zip(chunks, pool.map(_decode_rows, *zip(*chunks))):
                    bad += rows
                    progress.update(len(chunk[2]))
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
        return bad
    finally:
        progress.close()


def _decode_rows(file: Path, start: int, paths: list[Path], decode: Callable[[Path], np.ndarray | None]) -> list[int]:
    """One worker task: decode `paths` into rows start.. of `file`; the rows it could not read."""
    images = np.load(file, mmap_mode="r+")
    bad = []
    for row, path in enumerate(paths, start):
        pixels = decode(path)
        if pixels is None:
            bad.append(row)
        else:
            images[row] = pixels
    images.flush()
    return bad


class _Progress:
    """A tqdm bar on a terminal; elsewhere (logs, batch jobs) a log line at every tenth."""

    def __init__(self, total: int):
        self.total, self.done, self.logged = total, 0, 0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="image cache", unit="img", leave=False)
        else:
            log.info("image cache: decoding %d files", total)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.done * 10 // self.total > self.logged:
            self.logged = self.done * 10 // self.total
            log.info("image cache: %d/%d files decoded", self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
