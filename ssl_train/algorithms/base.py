"""The shared LightningModule: optimizer and schedule, EMA, metrics, logging and evaluation.

An algorithm subclasses `SSLAlgorithm`, names the unlabeled views it needs
and implements `losses(batch) -> StepLosses`. Everything else lives here once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score

from ssl_train import losses as L_
from ssl_train.algorithms.ema import EMA
from ssl_train.algorithms.part import Part
from ssl_train.data.scenarios import UNSEEN
from ssl_train.errors import NonFiniteLossError, SSLTrainError


@dataclass
class StepLosses:
    """What an algorithm computes for one training batch.

    `weights` are the unlabeled samples' weights in `unsup` (a 0/1 mask or a soft
    weight in [0, 1]) and `pseudo_labels` the labels they were pushed towards; the
    base logs the mask ratio as the mean weight and the pseudo-label accuracy
    weighted by them. `extra` are further named loss terms, already weighted,
    added to the loss as they are (FreeMatch's fairness, SimMatch's instance
    similarity).
    """

    sup: Tensor
    unsup: Tensor | None = None
    weights: Tensor | None = None
    pseudo_labels: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)


def eval_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "balanced_acc": MulticlassAccuracy(num_classes, average="macro"),  # the mean per-class recall
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        "ece": MulticlassCalibrationError(num_classes, n_bins=15, norm="l1"),
    }, prefix=prefix)


class SSLAlgorithm(L.LightningModule):
    """Base for all algorithms. The network is injected (`net`), never built here.

    Args:
        net: the classifier to train (pixels in [0, 1] → logits).
        num_classes: class count, for the metrics.
        optimizer: a partial optimizer (Hydra `_partial_: true`), completed with the parameter groups; None is
            FixMatch's SGD (lr 0.03, Nesterov momentum 0.9), as conf/optimizer/sgd.yaml.
        weight_decay: applied to weights only, not to biases and normalization parameters.
        lr_schedule: "cosine" (FixMatch's cos(7πk/16K) over `trainer.max_steps`) or "constant".
        lambda_u: weight of the unlabeled loss once ramped up.
        rampup: "none", "linear" or "sigmoid" ramp of that weight, over `rampup_fraction` of training.
        ema_decay: decay of the EMA copy of `net` (0 disables it); warmed up as min(1 − 1/(k+1), decay).
        eval_ema: evaluate (val/test) the EMA copy instead of the raw network.
    """

    unlabeled_views: tuple[str, ...] = ()

    def __init__(self, net: nn.Module, num_classes: int, optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 weight_decay: float = 5e-4, lr_schedule: str = "cosine", lambda_u: float = 1.0,
                 rampup: str = "none", rampup_fraction: float = 0.0, ema_decay: float = 0.999,
                 eval_ema: bool = True):
        super().__init__()
        if lr_schedule not in ("cosine", "constant"):
            raise SSLTrainError(f"algorithm.lr_schedule={lr_schedule!r}: expected 'cosine' or 'constant'")
        if rampup not in L_.RAMPUPS:
            raise SSLTrainError(f"algorithm.rampup={rampup!r}: expected one of {sorted(L_.RAMPUPS)}")
        if eval_ema and not ema_decay:
            raise SSLTrainError("algorithm.eval_ema=true needs algorithm.ema_decay > 0")
        # Networks are weights and parts are modules (checkpoints name the parts by their `to_config`).
        self.save_hyperparameters(ignore=["net", "optimizer", "teacher", "masking", "alignment"])
        self.net = net
        self.optimizer_factory = optimizer or functools.partial(torch.optim.SGD, lr=0.03, momentum=0.9, nesterov=True)
        self.ema = EMA(net, ema_decay) if ema_decay else None
        self.val_metrics = eval_metrics(num_classes, "val/")
        self.test_metrics = eval_metrics(num_classes, "test/")
        self.val_acc_best = MaxMetric()
        self.test_outliers = BinaryAUROC()  # outlier detection: test images of classes nobody labeled (UNSEEN)
        self._outliers_seen = False  # the test split holds UNSEEN images (set from the split, not per batch)
        self._pool_has_unseen = False  # likewise the unlabeled pool
        self._last_losses: dict[str, float] = {}
        self.checkpoint_extras: dict = {}
        self.test_prefix = "test"
        self.channels_last = False  # set by `ssl_train.speed.apply`

    def parts(self) -> dict[str, Part]:
        """The swappable parts this algorithm holds (masking, alignment), by attribute name."""
        return {name: module for name, module in self.named_children() if isinstance(module, Part)}

    def extra_modules(self) -> list[nn.Module]:
        """Trainable modules the algorithm owns beside `net` (SimMatch's projection head): the optimizer trains
        them too (no EMA copy, not exported)."""
        return []

    def head_width(self, algorithm: str) -> int:
        """The width of the features the backbone's linear head reads, for methods that add heads on them."""
        width = getattr(getattr(getattr(self.net, "backbone", None), "head", None), "in_features", None)
        if not isinstance(width, int):
            raise SSLTrainError(f"algorithm={algorithm}: the network's backbone needs a linear `head` (features → "
                                f"logits), {type(self.net).__name__} has none")
        return width

    def setup(self, stage: str) -> None:
        # Lightning calls this before it restores a checkpoint: parts size their state from the data here.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            for part in self.parts().values():
                part.bind(datamodule)

    def _input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # --- networks ---------------------------------------------------------------
    @property
    def eval_net(self) -> nn.Module:
        """The network that val/test/export see: the EMA copy when enabled."""
        return self.ema.module if self.hparams.eval_ema else self.net

    def forward(self, x: Tensor) -> Tensor:
        return self.eval_net(x)

    def forward_views(self, *views: Tensor) -> tuple[Tensor, ...]:
        """One forward pass over the concatenation, so batch norm sees labeled and unlabeled together."""
        return self.net(self._input(torch.cat(views))).split([len(v) for v in views])

    # --- training ---------------------------------------------------------------
    def losses(self, batch: dict) -> StepLosses:
        """The algorithm's losses for one batch: {"lb": {"x", "y"}, "ulb": {view: x}, "step"}."""
        raise NotImplementedError

    def unsup_weight(self) -> float:
        length = int(self.hparams.rampup_fraction * max(self.trainer.max_steps, 0))
        return self.hparams.lambda_u * L_.RAMPUPS[self.hparams.rampup](self.global_step, length)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        truth = batch.pop("ulb_truth", None)  # kept aside for monitoring, never shown to the algorithm
        out = self.losses(batch)
        weight = self.unsup_weight() if out.unsup is not None else 0.0
        loss = out.sup + weight * out.unsup if out.unsup is not None else out.sup
        loss = loss + sum(out.extra.values())
        logs = {"train/loss": loss.detach(), "train/sup_loss": out.sup.detach(),
                "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"]}
        if out.unsup is not None:
            logs |= {"train/unsup_loss": out.unsup.detach(), "train/unsup_weight": weight}
        logs |= {f"train/{name}_loss": term.detach() for name, term in out.extra.items()}
        if out.weights is not None:
            weights = out.weights.float()
            logs["train/mask_ratio"] = weights.mean()
            if truth is not None and out.pseudo_labels is not None:
                counted = weights * (truth >= 0)
                if counted.sum() > 0:  # pseudo-label accuracy as the weights count the labels
                    logs["train/pseudo_acc"] = (counted * (out.pseudo_labels == truth)).sum() / counted.sum()
                if self._pool_has_unseen:  # how much of the pool's unseen-class images the loss still trains on
                    unseen = truth == UNSEEN
                    logs["train/unseen_mask_ratio"] = (weights * unseen).sum() / unseen.sum().clamp_min(1)
        self._check_finite(loss, logs)
        logs = self._global_means(logs)
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False, batch_size=len(batch["lb"]["y"]))
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=len(batch["lb"]["y"]))
        return loss

    def _global_means(self, logs: dict) -> dict:
        """Under DDP, every logged value as its mean over ranks (one collective per step), so that the
        logs describe the global batch, as in a single-process run, not rank 0's share of it."""
        if self.trainer.world_size == 1:
            return logs
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device) for v in logs.values()])
        values = self.trainer.strategy.reduce(values, reduce_op="mean")
        return dict(zip(logs, values.unbind()))

    def _check_finite(self, loss: Tensor, logs: dict) -> None:
        current = {k.split("/")[-1]: float(v) for k, v in logs.items() if k.endswith("loss")}
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss at step {self.global_step}: {current}; "
                f"last finite losses: {self._last_losses or 'none'}")
        self._last_losses = current

    def optimizer_step(self, *args, **kwargs) -> None:
        # Updating the EMA here, not in on_train_batch_end, puts it before any callback
        # (a checkpoint) sees the step, so a resumed run continues the same average.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def on_train_start(self) -> None:
        self.val_acc_best.reset()  # forget the sanity check's untrained accuracy
        self._pool_has_unseen = self._holds_unseen("unlabeled")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # The last step validates whatever `val_check_interval` is (a stop request makes the fit loop validate):
        # every run ends with the validation of its final weights, so the swept metric and the best checkpoint
        # exist for runs shorter than one interval and cover the steps after the last interval.
        if 0 < self.trainer.max_steps <= self.global_step:
            self.trainer.should_stop = True

    # --- evaluation ---------------------------------------------------------------
    def outlier_scores(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits, outlier score) of the evaluated network: the higher the score, the likelier `x` is of a
        class nobody labeled. Here one minus the top softmax probability (the maximum-softmax baseline); an
        open-set method has its own."""
        logits = self.eval_net(self._input(x)).float()
        return logits, L_.max_softmax_outlier_score(logits)

    def _evaluate(self, batch: dict, metrics: MetricCollection, outliers: BinaryAUROC | None = None) -> tuple:
        """Class metrics on the labeled classes; with `outliers`, detection of UNSEEN images against them.
        Returns the labeled classes' (probabilities, labels)."""
        logits, score = self.outlier_scores(batch["x"])
        y = batch["y"]
        known = y >= 0
        probs = logits[known].softmax(-1)
        metrics.update(probs, y[known])
        if outliers is not None and self._outliers_seen:
            scored = known | (y == UNSEEN)
            outliers.update(score[scored], (y[scored] == UNSEEN).long())
        return probs, y[known]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        probs, labels = self._evaluate(batch, self.val_metrics)
        if self.trainer.state.fn == "fit":  # held-out labels a part may estimate from (not in a plain validate)
            for part in self.parts().values():
                part.observe_validation(probs, labels)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.state.fn == "fit":
            for part in self.parts().values():
                part.end_validation()
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        self.val_acc_best.update(values["val/acc"])
        self.log_dict(values | {"val/acc_best": self.val_acc_best.compute()}, prog_bar=True, sync_dist=True)

    def _holds_unseen(self, split: str) -> bool:
        """Whether the data module's `split` holds UNSEEN images: read from the split on the host, not from the
        batches (no device sync per step, and under DDP every rank logs the same keys)."""
        subset = getattr(getattr(self.trainer, "datamodule", None), split, None)
        return bool(np.any(subset.labels == UNSEEN)) if hasattr(subset, "labels") else False

    def on_test_epoch_start(self) -> None:
        self._outliers_seen = self._holds_unseen("test")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_outliers)

    def on_test_epoch_end(self) -> None:
        # `test_prefix` names what is tested (ssl-train tests two checkpoints: test/ and test_alt/), so that
        # each result is logged once under its own keys.
        values = self.test_metrics.compute()
        if self._outliers_seen:  # the test split holds images of unseen classes
            values["test/outlier_auroc"] = self.test_outliers.compute()
        values = {k.replace("test/", f"{self.test_prefix}/", 1): v for k, v in values.items()}
        self.log_dict(values, sync_dist=True)
        self.test_metrics.reset()
        self.test_outliers.reset()

    # --- optimization ---------------------------------------------------------------
    def configure_optimizers(self):
        total = self.trainer.max_steps
        if total is None or total <= 0:
            raise SSLTrainError(f"trainer.max_steps={total}: training is step-based, give a positive step count")
        def split(params: list) -> list[dict]:
            return [{"params": [p for p in params if p.ndim > 1], "weight_decay": self.hparams.weight_decay},
                    {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]

        own_groups = getattr(getattr(self.net, "backbone", None), "param_groups", None)  # e.g. layer-wise lr decay
        groups = own_groups(self.hparams.weight_decay) if own_groups else split(list(self.net.parameters()))
        extra = [p for module in self.extra_modules() for p in module.parameters()]
        optimizer = self.optimizer_factory(groups + (split(extra) if extra else []))
        for group in optimizer.param_groups:  # a group's share of the learning rate (`lr_scale`, as timm names it)
            group["lr"] *= group.pop("lr_scale", 1.0)
        factor = (lambda k: L_.cosine_lr_factor(k, total)) if self.hparams.lr_schedule == "cosine" else (lambda k: 1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ssl_train"] = self.checkpoint_extras or self._describe_run()

    def _describe_run(self) -> dict:
        """What a checkpoint needs to rebuild its network and data when the module was built by hand (ssl-train
        sets `checkpoint_extras` from the composed config): the configs the parts describe themselves with."""
        datamodule = getattr(self.trainer, "datamodule", None)
        model_config = getattr(self.net, "model_config", None)
        if not hasattr(datamodule, "to_config") or model_config is None:
            return {}  # not rebuildable: ssl-export and friends say so, naming the file
        algorithm = {"_target_": f"{type(self).__module__}.{type(self).__qualname__}",
                     **{k: v for k, v in self.hparams.items() if k != "num_classes"},
                     **{name: part.to_config() for name, part in self.parts().items()}}
        return {"config": {"model": model_config, "data": datamodule.to_config(), "algorithm": algorithm,
                           "seed": datamodule.seed},
                "classes": list(datamodule.source.classes), "input_shape": list(datamodule.input_shape),
                "mean": self.net.mean.flatten().tolist(), "std": self.net.std.flatten().tolist()}
