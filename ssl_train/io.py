"""Files: atomic writes (a reader never sees a half-written file under its final name) and content hashes.

Every output of every command goes through `write_atomic`: the file is saved
under its final name inside a fresh hidden directory beside the destination,
optionally verified (loaded back), then renamed into place (`os.replace` is
atomic within a file system). A failure at any point leaves no file under the
final name and no temporary file either. Saving under the final name matters:
TorchScript and torch.export name an archive's records after its file, so an
artifact's bytes must not depend on a temporary name. The file is created by
`save` itself, so it gets the user's umask.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, save: Callable[[Path], None],
                 verify: Callable[[Path], None] | None = None) -> Path:
    """save(tmp), then verify(tmp) (raising on failure), then rename tmp to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    staging.mkdir()
    tmp = staging / path.name
    try:
        save(tmp)
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` atomically, flushed to disk before the rename."""

    def save(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return write_atomic(path, save)


def write_json_atomic(path: str | Path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
