"""`ssl-predict` as installed (the console script, in a subprocess): a folder of digit images into the run
directory's predictions.csv, the same bytes as the Python API writes, and a failure that is one line, exit 1 and
no file. Every kind of bad input goes through the same error path in tests/run/test_predict.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from ssl_train.run.predict import PredictOptions, predict

SCRIPT = Path(sys.executable).parent / "ssl-predict"


def ssl_predict(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_folder_into_the_run_directory(run_dir, digit_folder, tmp_path, one_thread_env):
    images = digit_folder(tmp_path / "digits", splits=("new",), per_class=3) / "new"
    out = tmp_path / "out"
    result = ssl_predict(f"model_path={run_dir}", f"input={images}", f"hydra.run.dir={out}", "predict.batch_size=8",
                         cwd=tmp_path, env=one_thread_env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"30 images of {images} predicted by {run_dir / 'checkpoints' / 'last.ckpt'}")
    assert lines[1].startswith("temperature ") and "fitted on the validation split" in lines[1]
    assert lines[2] == f"→ {out / 'predictions.csv'}" and result.stderr == ""
    api = predict(run_dir, images, tmp_path / "api.csv", PredictOptions(batch_size=8))
    assert (out / "predictions.csv").read_text() == (tmp_path / "api.csv").read_text() and api["rows"] == 30


def test_a_failure_while_streaming_is_one_line_exit_1_and_no_file(run_dir, tmp_path, one_thread_env):
    """Lightning has started and two chunks are written when the third holds a NaN: stderr says only that, and
    neither predictions.csv nor a temporary file is left."""
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    x[37, 0, 2, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    result = ssl_predict(f"model_path={run_dir}", f"input={tmp_path / 'x.npy'}", f"hydra.run.dir={out}",
                         "predict.batch_size=16", cwd=tmp_path, env=one_thread_env)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"error: input={tmp_path / 'x.npy'}: non-finite pixel values (NaN or inf), first in "
                             "sample 37\n")
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "predict_cli.log"]
