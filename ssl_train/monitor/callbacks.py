"""Training-time hooks of the monitor (conf/callbacks/default.yaml).

`SaveReferenceProfile` writes the reference profile of the evaluated model when training ends, so every
run directory can be monitored. `PoolShiftCheck` warns when the unlabeled pool and the labeled set do not
look like one distribution: SSL methods assume they do, and a mismatch (another input distribution, or a
class mix that differs from the labeled one, e.g. a balanced labeled draw from imbalanced data) makes
pseudo-labels and consistency targets biased.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from ssl_train.io import write_json_atomic
from ssl_train.monitor import statistics as S
from ssl_train.run.profile import ProfileOptions, profile_checkpoint, profile_run, save_profile

log = logging.getLogger(__name__)


class SaveReferenceProfile(L.Callback):
    """At the end of `fit`: the profile of the model the run tests (`checkpoint`: "last", the final weights,
    or "best", the best-validation checkpoint) on the validation split → RUN_DIR/reference_profile.pt and
    .json. "best" falls back to the final weights when no checkpoint tracks a metric. A failure is logged,
    never allowed to fail a finished training run."""

    def __init__(self, output_dir: str, checkpoint: str = "last", **options):
        self.output_dir = Path(output_dir)
        self.checkpoint = checkpoint
        self.options = ProfileOptions(**options)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor and c.best_model_path), "")
        best = best if self.checkpoint == "best" else ""
        try:
            if best:
                profile = profile_checkpoint(best, self.options, datamodule=trainer.datamodule, device=pl_module.device)
            else:
                extras = pl_module.checkpoint_extras
                network = copy.deepcopy(pl_module.eval_net).eval()
                profile = profile_run(network, trainer.datamodule, extras["config"], extras["classes"],
                                      extras["input_shape"], extras["mean"], extras["std"],
                                      {"checkpoint": None, "weights": "final",
                                       "global_step": trainer.global_step}, self.options)
            path = save_profile(profile, self.output_dir)
            log.info("reference profile → %s", path)
        except Exception as exc:  # noqa: BLE001 - the run itself has finished: report, do not fail it
            log.warning("reference profile not saved: %s", exc)


class PoolShiftCheck(L.Callback):
    """Compares the unlabeled pool with the labeled set, warns on a mismatch, writes RUN_DIR/pool_check.json.

    At fit start, inputs: a permutation MMD test on pixels average-pooled to at most 8×8 (labeled set vs a
    seeded sample of the pool). At fit end, classes: the trained model's predictions on a sample of the
    pool, turned into class priors by black-box shift estimation with the validation confusion matrix and
    compared with the labeled class mix: a warning needs both a bootstrap p-value ≤ alpha and a total
    variation distance ≥ max_prior_distance. Both checks cost a few hundred forward passes.

    Args:
        output_dir: where pool_check.json goes (None: nowhere).
        alpha: p-value below which the input distributions are reported as different.
        max_prior_distance: smallest total variation distance between class mixes worth a warning.
        max_samples: images drawn from each set; permutations: of the MMD test; seed: the draws.
    """

    def __init__(self, output_dir: str | None = None, alpha: float = 0.01, max_prior_distance: float = 0.1,
                 max_samples: int = 500, permutations: int = 200, seed: int = 0):
        self.output_dir = Path(output_dir) if output_dir else None
        self.alpha, self.max_prior_distance = alpha, max_prior_distance
        self.max_samples, self.permutations, self.seed = max_samples, permutations, seed
        self.result: dict = {}

    def _pixels(self, subset, scale: float, seed_offset: int) -> torch.Tensor:
        pick = np.sort(np.random.default_rng(self.seed + seed_offset).permutation(len(subset))[:self.max_samples])
        x = subset[pick]["x"].float() * scale
        size = (min(8, x.shape[2]), min(8, x.shape[3]))
        return F.adaptive_avg_pool2d(x, size).flatten(1)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._guarded(self._check_inputs, trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._guarded(self._check_classes, trainer, pl_module)

    @staticmethod
    def _guarded(check, trainer, pl_module) -> None:
        """A check that cannot run (an unusual data module, say) is logged; it never stops training."""
        try:
            check(trainer, pl_module)
        except Exception as exc:  # noqa: BLE001 - advisory only
            log.warning("pool check skipped: %s: %s", type(exc).__name__, exc)

    def _check_inputs(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if not trainer.is_global_zero or dm is None or not len(dm.unlabeled) or len(dm.labeled) < 2:
            return
        labeled = self._pixels(dm.labeled, dm.source.scale, 0)
        unlabeled = self._pixels(dm.unlabeled, dm.source.scale, 1)
        if len(unlabeled) < 2:
            return
        test = S.mmd_permutation_test(labeled, unlabeled, self.permutations,
                                      generator=torch.Generator().manual_seed(self.seed))
        self.result["inputs"] = {"test": "MMD on pooled pixels", "p_value": test.p_value,
                                 "statistic": test.statistic, "samples": [len(labeled), len(unlabeled)],
                                 "mismatch": bool(test.p_value <= self.alpha)}
        if test.p_value <= self.alpha:
            log.warning("the unlabeled pool's images differ in distribution from the labeled set's (MMD p = %.3g "
                        "on %d vs %d images): SSL assumes they share one", test.p_value, len(labeled),
                        len(unlabeled))
        self._write()

    def _check_classes(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if not trainer.is_global_zero or dm is None or not len(dm.unlabeled) or not len(dm.val):
            return
        net = pl_module.eval_net
        was_training = net.training
        net.eval()
        try:
            with torch.inference_mode():
                unl_pred, _ = self._predict(net, dm.unlabeled, dm.source.scale, 1, pl_module.device)
                val_pred, val_true = self._predict(net, dm.val, dm.source.scale, 2, pl_module.device)
        finally:
            net.train(was_training)
        k = dm.num_classes
        confusion = np.zeros((k, k), dtype=np.int64)
        np.add.at(confusion, (val_true, val_pred), 1)
        labeled = np.bincount(dm.labeled.labels, minlength=k) / len(dm.labeled)
        priors, distance, p_value = S.prior_shift_test(confusion, np.bincount(unl_pred, minlength=k), labeled,
                                                       seed=self.seed)
        mismatch = bool(p_value <= self.alpha and distance >= self.max_prior_distance)
        classes = list(dm.source.classes)
        self.result["classes"] = {
            "method": "BBSE priors of the pool (validation confusion matrix) vs the labeled class mix",
            "total_variation": distance, "p_value": p_value, "mismatch": mismatch,
            "unlabeled_priors": dict(zip(classes, np.round(priors, 4).tolist())),
            "labeled_priors": dict(zip(classes, np.round(labeled, 4).tolist())), "samples": len(unl_pred)}
        if mismatch:
            worst = np.argsort(-np.abs(priors - labeled))[:3]
            detail = ", ".join(f"{classes[c]}: {priors[c]:.2f} vs {labeled[c]:.2f}" for c in worst)
            log.warning("the unlabeled pool's estimated class mix differs from the labeled set's (total variation "
                        "%.2f, p = %.3g; %s): SSL assumes they share one", distance, p_value, detail)
        self._write()

    def _predict(self, net, subset, scale: float, offset: int, device) -> tuple[np.ndarray, np.ndarray]:
        pick = np.sort(np.random.default_rng(self.seed + offset).permutation(len(subset))[:self.max_samples])
        preds = []
        for start in range(0, len(pick), 256):
            batch = subset[pick[start:start + 256]]
            preds.append(net(batch["x"].to(device).float() * scale).argmax(1).cpu())
        return torch.cat(preds).numpy(), np.asarray(subset.labels[pick])

    def _write(self) -> None:
        if self.output_dir is not None:
            write_json_atomic(self.output_dir / "pool_check.json", self.result)
