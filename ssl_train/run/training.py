"""One run from a composed config: build data, network, algorithm and trainer; train; test; metrics.json."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssl_train import speed
from ssl_train.algorithms.base import SSLAlgorithm
from ssl_train.data.datamodule import SSLDataModule
from ssl_train.errors import SSLTrainError, first_line
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.models.classifier import Classifier, input_stats
from ssl_train.run import guard
from ssl_train.run.data import build_datamodule
from ssl_train.run.progress import progress_callback
from ssl_train.run.tracking import finish_tracking

log = logging.getLogger(__name__)


def build(cfg: DictConfig, **algorithm_args) -> tuple[SSLDataModule, SSLAlgorithm, L.Trainer]:
    """Instantiate data, network, algorithm and trainer from a composed config.

    `algorithm_args` go to the algorithm's constructor beside the config (objects a config cannot hold, such
    as a distillation teacher's network).
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data)
    backbone = instantiate(cfg.model, input_shape=datamodule.input_shape, num_classes=datamodule.num_classes)
    mean, std = input_stats(backbone, datamodule)
    net = Classifier(backbone, mean, std)
    model: SSLAlgorithm = instantiate(cfg.algorithm, net=net, num_classes=datamodule.num_classes,
                                      optimizer=instantiate(cfg.optimizer), **algorithm_args)
    speed.apply(model, **cfg.get("speed", {}))
    model.checkpoint_extras = {
        "config": OmegaConf.to_container(cfg, resolve=True), "classes": list(datamodule.source.classes),
        "input_shape": list(datamodule.input_shape), "mean": mean, "std": std}
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(progress_callback(**(cfg.get("progress") or {})))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    return datamodule, model, trainer


def train(cfg: DictConfig, **algorithm_args) -> dict[str, float]:
    """Train and test one configuration; returns the metrics also written to RUN_DIR/metrics.json."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        check_resumable(ckpt_path)
    run_dir = Path(cfg.paths.output_dir)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    datamodule, model, trainer = build(cfg, **algorithm_args)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {"train/time_s": time.perf_counter() - start, "train/steps": trainer.global_step}
    metrics |= {f"data/{split}": n for split, n in datamodule.split_sizes().items()}
    if guard.enabled(cfg):
        metrics |= supervised_baseline(cfg, datamodule, model, trainer)
        model.checkpoint_extras["guard"] = {k: v for k, v in metrics.items() if k.startswith("guard/")}
    # last.ckpt holds the final state whatever the step count (the callback saves it every val interval).
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)  # the full state, to resume
    metrics |= {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))}
    if cfg.get("test"):
        metrics |= test(cfg, trainer, model, datamodule)
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "metrics.json", metrics)
        finish_tracking(trainer, cfg, metrics, run_dir)
    return metrics


def supervised_baseline(cfg: DictConfig, datamodule: SSLDataModule, model: SSLAlgorithm,
                        trainer: L.Trainer) -> dict[str, float]:
    """The guard (`run/guard.py`): the supervised baseline trained on the same data module (the same labels and
    splits), compared with the SSL model's final weights on the validation split."""
    if trainer.world_size > 1:
        log.warning("guard: skipped under DDP (run algorithm=supervised with the same data to compare)")
        return {}
    ssl_hits = guard.correct(model.eval_net, datamodule)
    start = time.perf_counter()
    _, baseline, baseline_trainer = build(guard.baseline_config(cfg))
    baseline_trainer.fit(baseline, datamodule=datamodule)
    result = guard.gain(ssl_hits, guard.correct(baseline.eval_net, datamodule), cfg.seed)
    result["guard/time_s"] = time.perf_counter() - start
    (log.info if result["guard/ssl_better"] else log.warning)(guard.verdict(result))
    return result


def check_resumable(path: str | Path) -> None:
    """A checkpoint to resume from must exist and load as tensors and plain data (`weights_only`): a file that
    holds pickled objects could run code, so it is refused before anything is written."""
    if not Path(path).is_file():
        raise SSLTrainError(f"ckpt_path={path}: no such checkpoint file")
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # unpickling, zip and EOF errors all mean "not a safe checkpoint"
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch colours its message for terminals
        refused = re.search(r"Unsupported global: (.+)", text)
        reason = f"it holds a pickled object, {refused.group(1).strip()}" if refused else first_line(Exception(text))
        raise SSLTrainError(f"ckpt_path={path} is not a checkpoint that loads safely: torch.load(weights_only=True) "
                            f"refused it ({reason})") from None


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
        model.test_prefix = "test" if name == choice else "test_alt"
        results = trainer.test(model, datamodule=datamodule, ckpt_path=path, verbose=False, weights_only=True)[0]
        metrics |= {k: float(v) for k, v in results.items()}
        metrics[f"{model.test_prefix}/checkpoint"] = path or last
    model.test_prefix = "test"
    if "test/acc" not in metrics:  # no best checkpoint (no validation): the final weights are both
        metrics |= {k.replace("test_alt/", "test/", 1): v for k, v in metrics.items()}
    return metrics
