"""SimMatch (Zheng et al., CVPR 2022): FixMatch's weak→strong pseudo-labels plus instance similarity to a bank of
labeled embeddings, the class and instance pseudo-labels calibrating each other by label propagation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.algorithms.distributed import gather_all
from ssl_train.algorithms.masking import FixedThreshold
from ssl_train.algorithms.part import build_part, check_fraction
from ssl_train.errors import SSLTrainError
from ssl_train.losses import label_propagation, masked_cross_entropy


class SimMatch(SSLAlgorithm):
    """A projection head embeds each view (L2-normalized); the bank holds one embedding per labeled sample.

    The weak view's similarity to the bank, softmax(e_w · bank / T), scaled by the class probability of each
    entry's label, is the target of the strong view's similarity (the instance loss, weight `lambda_in`); the
    weak view's class probabilities, mixed with that similarity summed per class (α = `smoothing_alpha`), are the
    soft pseudo-label of the strong view, weighted by `masking`. As USB's default (`use_cat`) path, the teacher is
    the student itself, detached: one forward pass over labeled, weak and strong, and the bank entries follow the
    labeled embeddings as a moving average (`bank_momentum`) after each step. The bank has exactly one entry per
    labeled sample (indexed by its position in the labeled set), which is what the method needs; USB repeats a
    small labeled set to fill a larger bank.

    Args:
        masking: a `masking` part; None is the fixed threshold τ = 0.95.
        alignment: an `alignment` part applied to the weak view's probabilities first; None: none.
        lambda_in: weight of the instance loss.
        temperature: T of the similarity softmax.
        smoothing_alpha: α, the class probabilities' share of the pseudo-label.
        proj_size: embedding width of the projection head.
        bank_momentum: a bank entry's share kept at each update (0 replaces it by the new embedding).
        warmup_fraction: share of training with the instance loss and propagation off while the random bank
            fills (USB: its first epoch, 1024 of 2^20 steps).
    """

    unlabeled_views = ("weak", "strong")

    def __init__(self, *args, masking=None, alignment=None, lambda_in: float = 1.0, temperature: float = 0.1,
                 smoothing_alpha: float = 0.9, proj_size: int = 128, bank_momentum: float = 0.7,
                 warmup_fraction: float = 1 / 1024, **kwargs):
        super().__init__(*args, **kwargs)
        check_fraction("algorithm.lambda_in", lambda_in, high=float("inf"))
        check_fraction("algorithm.temperature", temperature, low_open=True)
        check_fraction("algorithm.smoothing_alpha", smoothing_alpha)
        check_fraction("algorithm.bank_momentum", bank_momentum, high=0.999)
        check_fraction("algorithm.warmup_fraction", warmup_fraction)
        if not isinstance(proj_size, int) or isinstance(proj_size, bool) or proj_size < 1:
            raise SSLTrainError(f"algorithm.proj_size={proj_size!r}: expected an integer >= 1")
        width = self.head_width("simmatch")
        classes = self.hparams.num_classes
        self.masking = build_part(masking, classes, "masking") or FixedThreshold(classes)
        self.alignment = build_part(alignment, classes, "alignment")
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, proj_size))
        self.register_buffer("bank", torch.zeros(0, proj_size))
        self.register_buffer("bank_labels", torch.zeros(0, dtype=torch.long))

    def extra_modules(self) -> list[nn.Module]:
        return [self.projection]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if hasattr(datamodule, "labeled"):
            self.bind(datamodule)

    def bind(self, datamodule) -> None:
        """One bank entry per labeled sample, seeded random unit vectors until it is seen, and their labels; called
        before a checkpoint restores them."""
        labels = torch.as_tensor(datamodule.labeled.labels, dtype=torch.long, device=self.bank.device)
        if len(self.bank) != len(labels):
            g = torch.Generator().manual_seed(getattr(datamodule, "seed", 0))
            self.bank = F.normalize(torch.randn(len(labels), self.bank.shape[1], generator=g), dim=1).to(self.bank)
        self.bank_labels = labels

    def embed(self, *views: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """(logits, normalized embeddings) per view, from one forward pass over their concatenation."""
        features = self.net.features(self._input(torch.cat(views)))
        sizes = [len(v) for v in views]
        embeddings = F.normalize(self.projection(features).float(), dim=1)
        return self.net.backbone.head(features).split(sizes), embeddings.split(sizes)

    def losses(self, batch: dict) -> StepLosses:
        if not len(self.bank):
            raise SSLTrainError("SimMatch needs a bound data module for its labeled bank (train through a Trainer "
                                "with an SSLDataModule, or call bind(datamodule))")
        lb, ulb, hp = batch["lb"], batch["ulb"], self.hparams
        (logits_lb, logits_weak, logits_strong), (emb_lb, emb_weak, emb_strong) = self.embed(
            lb["x"], ulb["weak"], ulb["strong"])
        bank = self.bank.clone()  # this step's bank: the update below must not touch what backward needs
        probs_lb = logits_lb.detach().float().softmax(-1)
        probs = logits_weak.detach().float().softmax(-1)
        if self.alignment is not None:
            probs = self.alignment(probs, probs_lb=probs_lb)
        similarity = (emb_weak.detach() @ bank.T / hp.temperature).softmax(-1)
        instance_targets, targets = label_propagation(probs, similarity, self.bank_labels, hp.smoothing_alpha)
        warm = self.global_step < self._warmup_steps()
        targets = probs if warm else targets
        instance = F.cross_entropy(emb_strong @ bank.T / hp.temperature, instance_targets)
        weights = self.masking(targets, idx=ulb.get("idx"), probs_lb=probs_lb)
        self.update_bank(emb_lb.detach(), lb["y"], lb["idx"])
        extra = {"instance": (0.0 if warm else hp.lambda_in) * instance} | self.masking.penalty(logits_strong, weights)
        return StepLosses(sup=F.cross_entropy(logits_lb, lb["y"]),
                          unsup=masked_cross_entropy(logits_strong, targets, weights), weights=weights,
                          pseudo_labels=targets.argmax(-1), extra=extra)

    @torch.no_grad()
    def update_bank(self, embeddings: Tensor, labels: Tensor, idx: Tensor) -> None:
        """Move the global batch's labeled entries towards their new embeddings (renormalized); set their labels."""
        embeddings, labels, idx = gather_all(embeddings), gather_all(labels), gather_all(idx)
        m = self.hparams.bank_momentum
        self.bank[idx] = F.normalize(m * self.bank[idx] + (1 - m) * embeddings.to(self.bank), dim=1)
        self.bank_labels[idx] = labels

    def _warmup_steps(self) -> int:
        return int(self.hparams.warmup_fraction * max(self.trainer.max_steps, 0)) if self._trainer is not None else 0
