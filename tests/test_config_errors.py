"""The real `ssl-train` script: a bad config value is one `error:` line naming its key, before any training.

Each case costs one interpreter start (importing Lightning: a few seconds); every refusal itself is unit-tested
in tests/data and tests/models.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SSL_TRAIN = Path(sys.executable).with_name("ssl-train")
FAST_CLI = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
            "data.batch_size=10", "data.mu=1", "trainer.accelerator=cpu"]


@pytest.mark.parametrize("override, names", [
    ("data.strong.num_ops=-1", "data.strong.num_ops=-1: expected an integer >= 0"),
    ("data.weak.translate=0.9", "data.weak.translate=0.9: expected a number in [0, 0.5]"),
    ("model.widths=[0,1,2]", "model.widths=[0, 1, 2]: expected 3 positive integers"),
    ("model=wrn28_2 model._target_=ssl_train.models.wrn.WideResNet +model.depth=11",
     "model.depth=11: WideResNet depth must be 6n+4"),
    ("data=synthetic data.dataset.image_shape=[1,4,4]", "model=SmallCNN needs images of at least 8x8 pixels"),
    ("data.val_size=1.5", "data.val_size=1.5: expected a fraction in [0, 1)"),
    # not an SSLTrainError: Hydra's TypeError for an unknown option, made one line by run_cli
    ("+model.nope=1", "model (ssl_train.models.cnn.SmallCNN): SmallCNN.__init__() got an unexpected keyword "
                      "argument 'nope'"),
])
def test_a_bad_config_value_is_one_error_line_naming_the_key(tmp_path, override, names):
    run_dir = tmp_path / "run"
    result = subprocess.run([str(SSL_TRAIN), *FAST_CLI, *override.split(), f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"error: {names}"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr, result.stderr[-2000:]
    assert not (run_dir / "metrics.json").exists()
