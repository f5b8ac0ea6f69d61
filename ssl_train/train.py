"""`ssl-train`: compose the config, train, test (final weights and best checkpoint), write metrics.json.

    ssl-train                                   # FixMatch, digits, 40 labels
    ssl-train algorithm=mean_teacher data.num_labels=20 seed=3
    ssl-train -m algorithm=fixmatch,mean_teacher seed=0,1,2
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_train import speed
from ssl_train.algorithms.base import SSLAlgorithm
from ssl_train.data.datamodule import SSLDataModule
from ssl_train.errors import SSLTrainError, first_line
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.models.classifier import Classifier

log = logging.getLogger(__name__)

# conf/ sits beside the package in the repository (installed editable by `make`).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
REPORTED = ("test/acc", "test/f1_macro", "test/ece", "val/acc_best", "train/time_s")


def build(cfg: DictConfig) -> tuple[SSLDataModule, SSLAlgorithm, L.Trainer]:
    """Instantiate data, network, algorithm and trainer from a composed config."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: SSLDataModule = instantiate(cfg.data)
    datamodule.setup()
    mean, std = datamodule.channel_stats()
    backbone = instantiate(cfg.model, input_shape=datamodule.input_shape, num_classes=datamodule.num_classes)
    net = Classifier(backbone, mean, std)
    model: SSLAlgorithm = instantiate(cfg.algorithm, net=net, num_classes=datamodule.num_classes,
                                      optimizer=instantiate(cfg.optimizer))
    speed.apply(model, **cfg.get("speed", {}))
    datamodule.views = model.unlabeled_views
    model.checkpoint_extras = {
        "config": OmegaConf.to_container(cfg, resolve=True), "classes": list(datamodule.source.classes),
        "input_shape": list(datamodule.input_shape), "mean": mean, "std": std}
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and test one configuration; returns the metrics also written to RUN_DIR/metrics.json."""
    run_dir = Path(cfg.paths.output_dir)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if (cfg.get("audit") or {}).get("before_train"):
        from ssl_train.audit.pipeline import audit_before_training  # imported only when asked for

        audit_before_training(cfg, run_dir / "audit")
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    datamodule, model, trainer = build(cfg)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise SSLTrainError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {"train/time_s": time.perf_counter() - start, "train/steps": trainer.global_step}
    # last.ckpt holds the final state whatever the step count (the callback saves it every val interval).
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    metrics |= {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))}
    if cfg.get("test"):
        metrics |= test(cfg, trainer, model, datamodule)
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics


def test(cfg: DictConfig, trainer: L.Trainer, model: SSLAlgorithm, datamodule: SSLDataModule) -> dict:
    """Test the final weights and the best-validation checkpoint; `test/*` is the one `cfg.test_checkpoint` names,
    `test_alt/*` the other, so that a report can show both."""
    choice = cfg.get("test_checkpoint", "last")
    if choice not in ("last", "best"):
        raise SSLTrainError(f"test_checkpoint={choice!r}: expected 'last' or 'best'")
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor), "")
    last = str(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    # The final weights (= last.ckpt) are still in memory: tested before a checkpoint replaces them.
    checkpoints = {"last": None} | ({"best": best} if best else {})
    metrics = {}
    for name, path in checkpoints.items():
        prefix = "test" if name == choice else "test_alt"
        results = trainer.test(model, datamodule=datamodule, ckpt_path=path, verbose=False)[0]
        metrics |= {k.replace("test/", f"{prefix}/", 1): float(v) for k, v in results.items()}
        metrics[f"{prefix}/checkpoint"] = path or last
    if "test/acc" not in metrics:  # no best checkpoint (no validation): the final weights are both
        metrics |= {k.replace("test_alt/", "test/", 1): v for k, v in metrics.items()}
    return metrics


def results_table(cfg: DictConfig, metrics: dict) -> str:
    title = (f"{cfg.algorithm._target_.rsplit('.', 1)[-1]} on {cfg.data.dataset._target_.rsplit('.', 1)[-1]}, "
             f"{cfg.data.num_labels} labels, seed {cfg.seed}, {metrics.get('train/steps')} steps")
    rows = [(k, f"{metrics[k]:.4f}" if k != "train/time_s" else f"{metrics[k]:.1f}") for k in REPORTED if k in metrics]
    rows.append(("run dir", str(cfg.paths.output_dir)))
    width = max(len(k) for k, _ in rows)
    return "\n".join([title, "-" * len(title)] + [f"{k:<{width}}  {v}" for k, v in rows])


def run_cli(task, cfg: DictConfig):
    """Run an entry point's task; user errors become one line on stderr and exit status 1."""
    try:
        return task(cfg)
    except InstantiationException as exc:  # a `_target_` refused its config values: say why, not where
        if not isinstance(exc.__cause__, SSLTrainError):
            raise
        print(f"error: {first_line(exc.__cause__)}", file=sys.stderr)
        sys.exit(1)
    except (SSLTrainError, OmegaConfBaseException, FileNotFoundError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        sys.exit(1)


def optimized_value(cfg: DictConfig, metrics: dict) -> float:
    """What a Hydra sweeper optimizes: `cfg.optimized_metric` of the run (NaN when absent)."""
    value = metrics.get(cfg.optimized_metric)
    return float(value) if value is not None else float("nan")


def _task(cfg: DictConfig) -> float:
    metrics = train(cfg)
    print(results_table(cfg, metrics))
    return optimized_value(cfg, metrics)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    return run_cli(_task, cfg)


if __name__ == "__main__":
    main()
