"""Experiment tracking against the real mlflow and tensorboard packages, each with a store in a temporary folder."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from ssl_train.export.pipeline import ExportOptions, export_checkpoint
from ssl_train.run import tracking
from ssl_train.run.config import compose
from ssl_train.run.tracking import TRACKING_FILE, mlflow_client
from ssl_train.run.training import train

SHORT = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_steps=20", "trainer.val_check_interval=10",
         "trainer.log_every_n_steps=5", "trainer.enable_progress_bar=false", "data.batch_size=10", "data.mu=2"]
# `ssl-train logger=mlflow` in a fresh interpreter: mlflow decides on telemetry when first imported, and pytest's
# own environment (PYTEST_CURRENT_TEST) would switch it off for us. The audit hook sees any network attempt.
TRAIN = """
import sys
attempts = []
sys.addaudithook(lambda e, a: attempts.append((e, a)) if e in ("socket.connect", "socket.getaddrinfo") else None)
from ssl_train.run.config import compose
from ssl_train.run.training import train
train(compose("config", sys.argv[1:]))
import mlflow.telemetry
assert mlflow.telemetry.get_telemetry_client() is None, "mlflow telemetry is on"
assert not attempts, attempts
"""
QUIET = ("PYTEST_CURRENT_TEST", "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> tuple[Path, object, str]:
    """(run directory, client, run id) of a short FixMatch run with logger=mlflow and MLflow's default store."""
    root = tmp_path_factory.mktemp("tracked")
    env = {k: v for k, v in os.environ.items() if k not in QUIET} | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", TRAIN, "logger=mlflow", *SHORT, f"paths.output_dir={root / 'run'}"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((root / "run" / TRACKING_FILE).read_text())
    assert record["tracking_uri"] == f"sqlite:///{root / 'mlflow.db'}"  # MLflow's default, made absolute
    return root / "run", mlflow_client(record["tracking_uri"]), record["run_id"]  # an MlflowClient


def test_an_mlflow_run_holds_the_config_every_step_the_final_metrics_and_the_reports(tracked):
    run_dir, client, run_id = tracked
    run = client.get_run(run_id)
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["algorithm.masking.threshold"] == "0.95" and params["seed"] == "0"
    assert params["model.hidden"] == "[256, 256]"
    assert params["trainer.max_steps"] == "20" and params["logger.mlflow.log_checkpoints"] == "False"
    losses = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in losses] == [4, 9, 14, 19]
    saved = json.loads((run_dir / "metrics.json").read_text())
    numbers = {k: v for k, v in saved.items() if not isinstance(v, str)}
    assert {"test/acc", "val/acc_best", "train/time_s", "train/steps"} <= numbers.keys()
    assert {k: run.data.metrics[k] for k in numbers} == pytest.approx(numbers)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"metrics.json", "config.yaml", "pool_check.json", "reference_profile.json"} <= artifacts
    assert "checkpoints" not in artifacts and "csv" not in artifacts and TRACKING_FILE not in artifacts


def test_an_export_of_a_tracked_run_adds_its_files_and_numbers_to_that_run(tracked, tmp_path):
    run_dir, client, run_id = tracked
    options = ExportOptions(int8=False, pt2=False, latency_repeats=2, latency_warmup=1, reference_profile=False)
    meta = export_checkpoint(run_dir / "checkpoints" / "last.ckpt", tmp_path / "export", options)
    exported = {a.path for a in client.list_artifacts(run_id, "export")}
    assert exported == {"export/model.ts", "export/metadata.json", "export/MODEL_CARD.md"}
    metrics = client.get_run(run_id).data.metrics
    assert metrics["export/model.ts/acc"] == pytest.approx(meta["artifacts"]["model.ts"]["acc"])
    assert metrics["export/model.ts/size_bytes"] == (tmp_path / "export" / "model.ts").stat().st_size


def test_a_tracking_failure_is_one_warning_and_the_export_stands(tracked, tmp_path, caplog):
    _, client, _ = tracked
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    record = tmp_path / "run" / TRACKING_FILE
    record.write_text(json.dumps({"tracking_uri": client.tracking_uri, "run_id": "0" * 32}))  # no such run
    (tmp_path / "model.ts").write_bytes(b"model")
    meta = {"artifacts": {"model.ts": {"file": "model.ts", "acc": 0.5}}, "source_checkpoint": {"global_step": 1}}
    with caplog.at_level(logging.WARNING, logger="ssl_train.run.tracking"):
        tracking.log_export(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path, meta)
    [warning] = caplog.records
    assert f"not added to the MLflow run named in {record}" in warning.getMessage()
    assert "\n" not in warning.getMessage() and (tmp_path / "model.ts").read_bytes() == b"model"


def test_a_shared_run_directory_cannot_send_an_export_to_a_remote_store(tmp_path, caplog):
    """mlflow.json comes with a run directory, possibly someone else's: its server gets nothing unless trusted."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    record = tmp_path / "run" / TRACKING_FILE
    record.write_text(json.dumps({"tracking_uri": "http://127.0.0.1:9/", "run_id": "0" * 32}))
    meta = {"artifacts": {}, "source_checkpoint": {"global_step": 1}}
    with caplog.at_level(logging.WARNING, logger="ssl_train.run.tracking"):
        tracking.log_export(tmp_path / "run" / "checkpoints" / "last.ckpt", tmp_path, meta)
    [warning] = caplog.records
    assert "its store http://127.0.0.1:9/ is not local (trust_checkpoint=true" in warning.getMessage()
    assert tracking.is_local_store("sqlite:////tmp/mlflow.db") and tracking.is_local_store("/tmp/mlruns")
    assert not tracking.is_local_store("databricks") and not tracking.is_local_store("https://mlflow.example.org")


def test_checkpoints_are_artifacts_when_asked_and_a_param_keeps_its_first_value(tracked, tmp_path, caplog,
                                                                                monkeypatch):
    _, client, _ = tracked
    monkeypatch.chdir(tmp_path)  # where MLflow puts a new experiment's artifacts (./mlruns)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (tmp_path / "metrics.json").write_text('{"train/steps": 20}')
    logger = tracking.MLflowRunLogger(str(tmp_path), tracking_uri=client.tracking_uri, log_checkpoints=True,
                                      experiment_name="ssl_train")
    trainer = L.Trainer(logger=logger, accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False)
    for seed in (0, 7):  # a continued run (logger.mlflow.run_id=...) logs its config again
        cfg = compose("config", [*SHORT, "logger=mlflow", f"seed={seed}", f"paths.output_dir={tmp_path}"])
        with caplog.at_level(logging.WARNING, logger="ssl_train.run.tracking"):
            tracking.finish_tracking(trainer, cfg, {"train/steps": 20}, tmp_path)
    assert caplog.text.count("(params cannot change)") == 1 and "data.seed, seed (params" in caplog.text
    assert client.get_run(logger.run_id).data.params["seed"] == "0"
    assert {a.path for a in client.list_artifacts(logger.run_id, "checkpoints")} == {"checkpoints/last.ckpt"}
    assert {a.path for a in client.list_artifacts(logger.run_id)} == {"metrics.json", "checkpoints"}


def test_tensorboard_hparams_hold_the_config_and_the_final_metrics(make_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    metrics = train(make_cfg("logger=tensorboard", "model=mlp"))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    hparams = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info.hparams
    assert hparams["algorithm.masking.threshold"].number_value == 0.95 and hparams["seed"].number_value == 0
    assert hparams["model.hidden"].string_value == "[256, 256]"
    shown = {m.name.tag for m in HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment.metric_infos}
    assert {"test/acc", "val/acc_best", "train/time_s"} <= shown
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    assert "hp_metric" not in events.Tags()["scalars"]


@pytest.mark.parametrize("uri, expected", [
    ("sqlite:///mlflow.db", "sqlite:///{cwd}/mlflow.db"), ("sqlite:////srv/m.db", "sqlite:////srv/m.db"),
    ("./mlruns", "{cwd}/mlruns"), ("file:./mlruns", "file://{cwd}/mlruns"), ("http://host:5000", "http://host:5000"),
    ("databricks", "databricks"),
])
def test_a_local_store_is_recorded_by_its_absolute_uri(uri, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.absolute_uri(uri) == expected.format(cwd=tmp_path.resolve())
