"""What every command shares (ssl_train/cli.py): a user's own module found from the working directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FAST = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
        "data.batch_size=10", "data.mu=1", "trainer.accelerator=cpu"]


def test_a_users_own_model_is_found_beside_where_the_command_runs(tmp_path, one_thread_env):
    (tmp_path / "mynets.py").write_text(
        "from ssl_train.models.mlp import MLP\n\n\nclass TinyNet(MLP):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__(input_shape, num_classes, hidden=[16])\n")
    env = {k: v for k, v in one_thread_env.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(Path(sys.executable).parent / "ssl-train"), "model._target_=mynets.TinyNet",
                             "~model.widths", *FAST, f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["train/steps"] == 2
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "_target_: mynets.TinyNet" in config


def test_the_python_api_names_resolve_and_leave_the_subpackages_alone():
    import importlib

    import ssl_train as st

    for name in st.__all__:
        assert getattr(st, name) is not None, name
    packages = {p.name for p in Path(st.__file__).parent.iterdir() if (p / "__init__.py").is_file()}
    assert not packages & set(st.__all__)
    assert importlib.import_module("ssl_train.monitor.callbacks").SaveReferenceProfile
