"""Artifacts appear under their final name only once complete and verified (`ssl_train.io.write_atomic`):
every exporter saves to a staging file, loads it back and checks it against the reference model, and only
then renames it into place."""

from __future__ import annotations

from torch import Tensor

from ssl_train.errors import SSLTrainError


def check_parity(name: str, expected: list[Tensor], got: list[Tensor], atol: float) -> float:
    """Largest absolute difference over all batches; an SSLTrainError naming the artifact when above `atol`."""
    diff = max(float((e.float() - g.float()).abs().max()) for e, g in zip(expected, got, strict=True))
    if not diff <= atol:  # also catches NaN
        raise SSLTrainError(f"{name}: output differs from the reference model by {diff:.3g} (max abs) > {atol:g}; "
                            "nothing was written")
    return diff
