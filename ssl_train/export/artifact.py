"""Artifacts appear under their final name only once complete and verified.

Every exporter saves to a temporary file in the destination directory, loads
that file back and checks it, and only then renames it into place
(`os.replace` is atomic within a file system). A failure at any point leaves no
file under the final name, and no temporary file either.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from ssl_train.errors import SSLTrainError


def write_verified(path: str | Path, save: Callable[[Path], None], verify: Callable[[Path], None]) -> Path:
    """save(tmp) then verify(tmp) (raising on failure), then rename tmp to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The file is saved under its final name inside a fresh hidden directory beside it: TorchScript and
    # torch.export name the archive's records after the file, so the artifact's bytes do not depend on a
    # temporary name; the file is created by `save` itself, so it gets the user's umask.
    staging = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    staging.mkdir()
    tmp = staging / path.name
    try:
        save(tmp)
        verify(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def check_parity(name: str, expected: list[Tensor], got: list[Tensor], atol: float) -> float:
    """Largest absolute difference over all batches; an SSLTrainError naming the artifact when above `atol`."""
    diff = max(float((e.float() - g.float()).abs().max()) for e, g in zip(expected, got, strict=True))
    if not diff <= atol:  # also catches NaN
        raise SSLTrainError(f"{name}: output differs from the reference model by {diff:.3g} (max abs) > {atol:g}; "
                            "nothing was written")
    return diff


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
