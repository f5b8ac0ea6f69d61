"""The export of the shared trained digits model (`digits_ckpt`, tests/conftest.py), for the export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_train.export.measure import threads
from ssl_train.export.pipeline import ExportOptions, export_checkpoint

# Latency is reported, not tested: a few single-thread repeats keep the fixture fast.
QUICK = ExportOptions(latency_repeats=3, latency_warmup=1, latency_threads=1, calibration_samples=256)


@pytest.fixture(scope="session")
def exported(digits_ckpt, tmp_path_factory) -> tuple[Path, dict]:
    """(export directory, metadata) of `digits_ckpt` with every default artifact."""
    out = tmp_path_factory.mktemp("export")
    with threads(1):
        return out, export_checkpoint(digits_ckpt, out, QUICK)
