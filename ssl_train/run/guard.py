"""The guard: does SSL beat training on the labels alone? The supervised baseline on the same labels and splits,
and the validation gain of SSL over it with a paired bootstrap interval.

On some data SSL does worse than its own labels would do alone (an unlabeled pool from another domain, classes
nobody labeled, a skewed mix). The guard trains `conf/algorithm/supervised.yaml` with the run's own data,
network, optimizer and step budget (the labeled batches only: about 1/(1 + 2μ) of an SSL step's images), then
compares the two final evaluated networks on the same validation images. SSL counts as better only when the
whole 95% interval of the gain is above zero; otherwise one warning says so.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from scipy.stats import bootstrap
from torch import nn

from ssl_train.data.datamodule import SSLDataModule
from ssl_train.errors import SSLTrainError
from ssl_train.run.batches import float_batches
from ssl_train.run.config import config_dir

log = logging.getLogger(__name__)
SUPERVISED = "ssl_train.algorithms.supervised.Supervised"


def enabled(cfg: DictConfig) -> bool:
    """`guard` is true or false; a supervised run has nothing to guard."""
    value = cfg.get("guard", False)
    if not isinstance(value, bool):
        raise SSLTrainError(f"guard={value!r}: expected true (also train the supervised baseline on the same "
                            f"labels and report SSL's validation gain over it) or false")
    return value and cfg.algorithm.get("_target_") != SUPERVISED


def baseline_config(cfg: DictConfig) -> DictConfig:
    """The run's config with the supervised algorithm, writing into RUN_DIR/guard/, without loggers, callbacks
    or checkpoints (only its final network is compared)."""
    base = cfg.copy()
    with open_dict(base):
        # Read as a file, not composed: a compose inside a running Hydra job would replace the job's Hydra config,
        # and the run's own ${hydra:...} paths would then resolve to another directory.
        base.algorithm = OmegaConf.load(config_dir() / "algorithm" / "supervised.yaml")
        base.paths.output_dir = f"{cfg.paths.output_dir}/guard"
        base.logger, base.callbacks = {}, {}
        base.trainer.enable_checkpointing = False
        base.trainer.limit_val_batches = 0
        base.guard = False
    return OmegaConf.create(OmegaConf.to_container(base, resolve=True))


@torch.no_grad()
def correct(net: nn.Module, datamodule: SSLDataModule) -> np.ndarray:
    """Per validation image: does `net` (in eval mode) predict its label?"""
    was_training, device = net.training, next(net.parameters()).device
    net.eval()
    hits = [(net(x.to(device)).argmax(1).cpu() == y).numpy()
            for x, y in float_batches(datamodule.val, datamodule.source.scale, datamodule.eval_batch_size)]
    net.train(was_training)
    return np.concatenate(hits)


def gain(ssl: np.ndarray, supervised: np.ndarray, seed: int, resamples: int = 2000,
         level: float = 0.95) -> dict[str, float]:
    """Validation accuracy of both, SSL's gain and its paired percentile bootstrap interval (scipy), and whether
    SSL is better: the whole interval above zero."""
    difference = ssl.astype(float) - supervised.astype(float)
    if difference.any():
        ci = bootstrap((difference,), np.mean, n_resamples=resamples, confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    else:  # identical predictions on every image: no spread to resample
        low = high = 0.0
    return {"guard/val_acc_ssl": float(ssl.mean()), "guard/val_acc_supervised": float(supervised.mean()),
            "guard/gain": float(difference.mean()), "guard/gain_low": low, "guard/gain_high": high,
            "guard/ssl_better": float(low > 0)}


def verdict(result: dict[str, float]) -> str:
    """The guard's line for the log and the results table."""
    numbers = (f"validation accuracy {result['guard/val_acc_ssl']:.4f} against {result['guard/val_acc_supervised']:.4f}"
               f" supervised on the same labels (gain {100 * result['guard/gain']:+.1f} points, 95% CI "
               f"[{100 * result['guard/gain_low']:+.1f}, {100 * result['guard/gain_high']:+.1f}])")
    if result["guard/ssl_better"]:
        return f"guard: SSL beats the supervised baseline: {numbers}"
    return (f"guard: SSL is not better than supervised training on the same labels: {numbers}; the unlabeled pool "
            f"may not match the labeled data (pool_check.json), or use the supervised model (algorithm=supervised)")


def read(saved, source) -> dict[str, float] | None:
    """The guard numbers a checkpoint carries (`source` names it in errors): the known keys, each a number."""
    if saved is None:
        return None
    keys = ("guard/val_acc_ssl", "guard/val_acc_supervised", "guard/gain", "guard/gain_low", "guard/gain_high",
            "guard/ssl_better")
    if not isinstance(saved, dict) or any(not isinstance(saved.get(k), (int, float)) or isinstance(saved.get(k), bool)
                                          for k in keys):
        raise SSLTrainError(f"{source}: its 'guard' entry is not the guard's numbers ({', '.join(keys)})")
    return {k: float(saved[k]) for k in (*keys, "guard/time_s") if isinstance(saved.get(k), (int, float))}
