"""Distribution alignment parts: pseudo-label probabilities reweighted per class towards a target class marginal.

`DistributionAlignment` keeps persistent Sinkhorn weights over a window of
recent predictions (ssl_train's default for FixMatch); `RatioAlignment` is the
one-step ratio of ReMixMatch, SoftMatch and AdaMatch, p · target / p̄ with p̄ a
running mean of the predictions. Both take `forward(probs, probs_lb=None)`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_train.algorithms.distributed import gather_all
from ssl_train.algorithms.part import Part, check_fraction
from ssl_train.errors import SSLTrainError
from ssl_train.losses import aligned_probs, balance_log_weights, label_shift_prior


def labeled_prior(datamodule) -> Tensor | None:
    """The labeled set's class frequencies, when the data module knows them."""
    return datamodule.labeled_class_prior() if hasattr(datamodule, "labeled_class_prior") else None


class DistributionAlignment(Part):
    """Per-class weights that give the recent unlabeled predictions the target class marginal, applied to each batch.

    ReMixMatch divides each prediction by the mean of recent predictions, afresh at
    every step. That damps an over-predicted class but cannot undo a confident
    mistake: at a few labels per class a whole cluster of one class (digits: 1s
    with a base stroke, 9s with a straight tail) is absorbed by another at
    confidence ~0.97, and a ×1.3 reweighting leaves it there, so the network
    trains on it for good. Here the weights persist from step to step and take
    `iterations` Sinkhorn steps on the last `window` predictions, so the aligned
    class marginal converges to the target and the least certain members of an
    over-predicted class move to the class that lacks them.

    `target` is the class marginal aligned to. "labeled": the labeled set's
    class frequencies (as ReMixMatch; `bind` sets them before training): the
    unlabeled data is assumed to follow them, which forces the labeled draw's mix
    (balanced, on most benchmarks) on a pool that may be long-tailed. "pool": an
    estimate of the unlabeled pool's own mix, starting from the labeled
    frequencies and re-estimated after each validation pass by black-box shift
    estimation (`losses.label_shift_prior`): the validation split's soft
    confusion matrix inverts the mean of the window's unaligned predictions.
    Under DDP every rank adds the whole global batch, so all ranks hold the same
    weights. The window, weights and target are buffers: they are checkpointed,
    and a resumed run aligns exactly as before.
    """

    TARGETS = ("labeled", "pool")

    def __init__(self, num_classes: int, window: int = 8192, iterations: int = 1, target: str = "labeled"):
        for key, value in (("window", window), ("iterations", iterations)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SSLTrainError(f"algorithm.alignment.{key}={value!r}: expected an integer >= 1")
        if target not in self.TARGETS:
            raise SSLTrainError(f"algorithm.alignment.target={target!r}: expected one of {list(self.TARGETS)}")
        super().__init__(window=window, iterations=iterations, target=target)
        self.iterations, self.target_kind = iterations, target
        self.register_buffer("confusion", torch.zeros(num_classes, num_classes), persistent=False)
        self.register_buffer("window", torch.zeros(window, num_classes))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self._seen = 0  # `seen` on the host: reading the buffer would wait for the device at every step
        self.register_buffer("log_weights", torch.zeros(num_classes))
        self.register_buffer("target", torch.full((num_classes,), 1.0 / num_classes))

    def bind(self, datamodule) -> None:
        prior = labeled_prior(datamodule)
        if prior is not None:
            self.set_target(prior)

    def set_target(self, class_prior: Tensor) -> None:
        """The class marginal to align to (a class never labeled keeps a tiny share, not zero)."""
        prior = torch.as_tensor(class_prior, dtype=torch.float64).clamp_min(1e-6)
        self.target.copy_(prior / prior.sum())

    def observe_validation(self, probs: Tensor, labels: Tensor) -> None:
        if self.target_kind == "pool":
            rows = gather_all(torch.nn.functional.one_hot(labels, len(self.target)).float())
            self.confusion += rows.T @ gather_all(probs.detach().float())

    def end_validation(self) -> None:
        """Re-estimate the pool's class mix (target "pool") from this validation pass and the window."""
        counts = self.confusion.sum(dim=1, keepdim=True)
        if self.target_kind == "pool" and self._seen and bool((counts > 0).all()):
            recent = self.window[: min(self._seen, len(self.window))]
            # A class the estimate leaves at zero keeps a tenth of a uniform share: a small validation split's
            # confusion matrix is noisy, and a zero target would take every pseudo-label away from that class.
            estimate = label_shift_prior(self.confusion / counts, recent.mean(dim=0)).to(self.target)
            self.set_target(estimate.clamp_min(0.1 / len(estimate)))
        self.confusion.zero_()

    def forward(self, probs: Tensor, probs_lb: Tensor | None = None) -> Tensor:
        """Add `probs` (N × classes) to the window, update the weights, return `probs` aligned."""
        self._remember(gather_all(probs.detach().float()))
        recent = self.window[: min(self._seen, len(self.window))]
        self.log_weights.copy_(balance_log_weights(recent, self.target, self.log_weights, self.iterations))
        return aligned_probs(probs, self.log_weights)

    def _remember(self, probs: Tensor) -> None:
        size = len(self.window)
        probs = probs[-size:]
        slots = (self._seen + torch.arange(len(probs), device=probs.device)) % size
        self.window[slots] = probs
        self.seen += len(probs)
        self._seen += len(probs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "seen" in state_dict:  # a checkpoint's tensors are on the CPU: no device sync
            self._seen = int(state_dict[prefix + "seen"])



class RatioAlignment(Part):
    """p · target / p̄, renormalized, with p̄ the EMA (`momentum`) of the unlabeled batches' mean prediction,
    started from the first batch's mean (momentum 0: the batch's own mean, as AdaMatch's paper).

    `target`: "uniform" (SoftMatch's uniform alignment), "labeled" (the labeled set's class frequencies, as
    ReMixMatch) or "predictions" (the EMA of the labeled batches' mean prediction, as AdaMatch).
    """

    TARGETS = ("uniform", "labeled", "predictions")

    def __init__(self, num_classes: int, momentum: float = 0.999, target: str = "uniform"):
        if target not in self.TARGETS:
            raise SSLTrainError(f"algorithm.alignment.target={target!r}: expected one of {list(self.TARGETS)}")
        super().__init__(momentum=check_fraction("algorithm.alignment.momentum", momentum), target=target)
        self.momentum, self.target_kind = momentum, target
        self.register_buffer("model_mean", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("target", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self._updates = 0  # `updates` on the host, so the first-update test does not wait for the device

    def bind(self, datamodule) -> None:
        prior = labeled_prior(datamodule) if self.target_kind == "labeled" else None
        if prior is not None:
            prior = torch.as_tensor(prior, dtype=torch.float32).clamp_min(1e-6)
            self.target.copy_(prior / prior.sum())

    def forward(self, probs: Tensor, probs_lb: Tensor | None = None) -> Tensor:
        m = self.momentum if self._updates else 0.0
        self.model_mean.mul_(m).add_((1 - m) * gather_all(probs.detach().float()).mean(dim=0))
        if self.target_kind == "predictions":
            if probs_lb is None:
                raise SSLTrainError("algorithm.alignment.target=predictions needs the labeled batch's probabilities")
            self.target.mul_(self.momentum).add_((1 - self.momentum) * gather_all(probs_lb.detach().float()).mean(0))
        self.updates += 1
        self._updates += 1
        aligned = probs * (self.target + 1e-6) / (self.model_mean + 1e-6)
        return aligned / aligned.sum(dim=-1, keepdim=True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "updates" in state_dict:
            self._updates = int(state_dict[prefix + "updates"])
