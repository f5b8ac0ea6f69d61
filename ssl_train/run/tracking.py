"""What a run's loggers get once it is over, and an export's files for the run its checkpoint came from.

    MLflow       params: the resolved config, flattened (`algorithm.masking.threshold`, `seed`); metrics: metrics.json's
                 numbers at the final step; artifacts: the run directory's reports (JSON, YAML, Markdown, HTML;
                 the checkpoints with `log_checkpoints`); RUN_DIR/mlflow.json: run id and store, for later commands
    TensorBoard  hparams: the same flattened config with the final metrics (the HParams tab)
    ssl-export   the export of a tracked run's checkpoint → its files under the run's `export/` artifacts

Per-step metrics reach every logger through Lightning while training. mlflow is imported only when an MLflow
logger is used (the `mlflow` extra), with its usage telemetry off unless MLFLOW_DISABLE_TELEMETRY says otherwise
(mlflow starts it on import): nothing goes over the network but what the tracking URI names.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from ssl_train.errors import first_line
from ssl_train.io import write_json_atomic
from ssl_train.run.safety import Trust

log = logging.getLogger(__name__)

TRACKING_FILE = "mlflow.json"
REPORT_SUFFIXES = (".json", ".yaml", ".md", ".html")
MAX_REPORT_BYTES = 10 << 20   # reports, not data: anything bigger stays out of the run's artifacts


def _no_telemetry() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read when mlflow is first imported


def mlflow_client(tracking_uri: str):
    """MLflow's client of the store at `tracking_uri` (mlflow imported with its telemetry off)."""
    _no_telemetry()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def absolute_uri(uri: str) -> str:
    """`uri` with a local store's relative path made absolute, so that a command run elsewhere finds the store
    (sqlite:///mlflow.db → sqlite:////abs/mlflow.db; file paths as MLflow resolves them)."""
    from mlflow.utils.uri import resolve_uri_if_local

    path = uri.removeprefix("sqlite:///")
    if path != uri and not path.startswith(("/", ":memory:")):
        return f"sqlite:///{Path(path).resolve()}"
    return resolve_uri_if_local(uri)


class MLflowRunLogger(MLFlowLogger):
    """Lightning's MLFlowLogger, named after its run directory by default, its store given as an absolute URI
    (RUN_DIR/mlflow.json must find it from anywhere), and `log_checkpoints` for `finish_tracking`.

    `tracking_uri=None` is MLflow's own choice: MLFLOW_TRACKING_URI, else its default local store
    (sqlite:///mlflow.db in the working directory since MLflow 3.7).
    """

    def __init__(self, run_dir: str, tracking_uri: str | None = None, run_name: str | None = None,
                 log_checkpoints: bool = False, **kwargs):
        _no_telemetry()
        import mlflow

        self.tracking_uri = absolute_uri(tracking_uri or mlflow.get_tracking_uri())
        super().__init__(tracking_uri=self.tracking_uri, run_name=run_name or Path(run_dir).name, **kwargs)
        self.log_checkpoints = log_checkpoints


def finish_tracking(trainer: L.Trainer, cfg: DictConfig, metrics: dict, run_dir: Path) -> None:
    """Called once after metrics.json is written (rank 0). A logger that fails here costs one warning, not the
    run: its results are on disk already."""
    params = {k: json.dumps(v) if isinstance(v, list) else v
              for k, v in flatten(OmegaConf.to_container(cfg, resolve=True)).items()}
    final = {k: float(v) for k, v in metrics.items() if _is_number(v)}
    log_dirs = {Path(d).resolve() for d in (getattr(lg, "log_dir", None) for lg in trainer.loggers) if d}
    for logger in trainer.loggers:
        try:
            if isinstance(logger, MLFlowLogger):
                files = run_files(Path(run_dir), getattr(logger, "log_checkpoints", False), skip=log_dirs)
                _finish_mlflow(logger, params, final, trainer.global_step, Path(run_dir), files)
            elif isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, metrics=final, step=trainer.global_step)
                logger.finalize("success")  # flush the events, rewrite hparams.yaml
        except Exception as exc:  # a store or disk problem: the run itself is complete
            log.warning("%s: the final config, metrics or files were not all recorded: %s",
                        type(logger).__name__, first_line(exc))


def _finish_mlflow(logger: MLFlowLogger, params: dict[str, Any], final: dict[str, float], step: int,
                   run_dir: Path, files: list[Path]) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    client, run_id = logger.experiment, logger.run_id
    run = client.get_run(run_id)
    write_json_atomic(run_dir / TRACKING_FILE, {
        "run_id": run_id, "experiment_id": run.info.experiment_id, "run_name": run.info.run_name,
        "tracking_uri": absolute_uri(client.tracking_uri), "artifact_uri": run.info.artifact_uri})

    # A param cannot change once logged (a run continued with run_id=...): the first value stays.
    logged = run.data.params
    values = {k: str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()}
    changed = sorted(k for k, v in values.items() if k in logged and logged[k] != v)
    if changed:
        log.warning("MLflow run %s keeps its first values of %s (params cannot change)", run_id, ", ".join(changed))
    new = [Param(k, v) for k, v in values.items() if k not in logged]
    for i in range(0, len(new), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=new[i:i + MAX_PARAMS_TAGS_PER_BATCH])
    # Lightning logged most of these while training; the rest (train/time_s, ...) come at the final step.
    now = int(time.time() * 1000)
    numbers = [Metric(k, v, now, step) for k, v in final.items() if run.data.metrics.get(k) != v]
    for i in range(0, len(numbers), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=numbers[i:i + MAX_METRICS_PER_BATCH])

    for path in files:
        folder = path.parent.relative_to(run_dir).as_posix()
        client.log_artifact(run_id, str(path), None if folder == "." else folder)
    client.set_terminated(run_id, "FINISHED")  # the end time after the last record


def run_files(run_dir: Path, checkpoints: bool = False, skip: set[Path] = frozenset()) -> list[Path]:
    """A run directory's reports: small JSON, YAML, Markdown and HTML files at its top or one folder down (but
    in hidden folders other than Hydra's record .hydra/, and in the `skip` folders: the loggers' own), then its
    checkpoints when asked for."""

    def report(path: Path) -> bool:
        folder = path.parent.name if path.parent != run_dir else ""
        return (path.is_file() and path.suffix in REPORT_SUFFIXES and path.name != TRACKING_FILE
                and path.stat().st_size <= MAX_REPORT_BYTES and (not folder.startswith(".") or folder == ".hydra")
                and path.parent.resolve() not in skip)

    reports = [p for p in sorted([*run_dir.glob("*"), *run_dir.glob("*/*")]) if report(p)]
    return reports + (sorted((run_dir / "checkpoints").glob("*.ckpt")) if checkpoints else [])


def log_export(ckpt_path: str | Path, out_dir: str | Path, meta: dict, trust: Trust | None = None) -> None:
    """Add an export's files under `export/`, and each artifact's numbers as `export/<file>/<name>` metrics, to
    the MLflow run its checkpoint came from, when that run directory names one (RUN/checkpoints/x.ckpt beside
    RUN/mlflow.json). Any failure is one warning: the export is on disk whatever happens here.

    A run directory may come from someone else, and its mlflow.json could name their server: the files go to a
    local store (a path, file: or sqlite: URI) only, unless the checkpoint is trusted (`trust_checkpoint=true`).
    """
    record = Path(ckpt_path).resolve().parent.parent / TRACKING_FILE
    if not record.is_file():
        return
    try:
        tracked = json.loads(record.read_text())
        uri = str(tracked["tracking_uri"])
        if not is_local_store(uri) and not (trust and trust.everything):
            log.warning("the export was not added to the MLflow run named in %s: its store %s is not local "
                        "(trust_checkpoint=true sends the files there)", record, uri)
            return
        client, run_id = mlflow_client(tracked["tracking_uri"]), tracked["run_id"]
        from mlflow.entities import Metric  # once mlflow_client has turned telemetry off

        step = meta["source_checkpoint"]["global_step"]
        now = int(time.time() * 1000)
        numbers = flatten(meta["artifacts"], sep="/", prefix="export/")
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in numbers.items()
                                          if _is_number(v)])
        profile = meta.get("reference_profile")
        names = [a["file"] for a in meta["artifacts"].values()] + ["metadata.json", "MODEL_CARD.md"] + (
            [profile, Path(profile).with_suffix(".json").name] if profile else [])
        for name in names:
            if (Path(out_dir) / name).is_file():
                client.log_artifact(run_id, str(Path(out_dir) / name), "export")
    except Exception as exc:  # a missing store, a deleted run, no mlflow installed: the export stands
        log.warning("the export was not added to the MLflow run named in %s: %s", record, first_line(exc))


def is_local_store(uri: str) -> bool:
    """A tracking store on this machine: a plain path, or a file: or sqlite: URI (`databricks` is MLflow's name for
    a remote workspace, not a folder)."""
    scheme = urlparse(uri).scheme
    if not scheme:
        return not uri.startswith("databricks")
    return scheme in ("file", "sqlite") or len(scheme) == 1  # one letter: a Windows drive


def flatten(tree: dict, sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; lists are values; an empty dict leaves no key."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, sep, f"{prefix}{key}{sep}")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
