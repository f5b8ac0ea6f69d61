"""Distribution alignment: pseudo-label probabilities reweighted per class towards a target class marginal."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ssl_train.errors import SSLTrainError
from ssl_train.losses import aligned_probs, balance_log_weights


class DistributionAlignment(nn.Module):
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

    The target is uniform until `set_target` gives the labeled set's class
    frequencies (as ReMixMatch does; FixMatch does so when training starts): the
    unlabeled data is assumed to follow them. Under DDP every rank adds the whole
    global batch, so all ranks hold the same weights. The window and weights are
    buffers: they are checkpointed, and a resumed run aligns exactly as before.
    """

    def __init__(self, num_classes: int, window: int = 8192, iterations: int = 1):
        super().__init__()
        if window < 1 or iterations < 1:
            raise SSLTrainError(f"algorithm.alignment_window={window}, algorithm.alignment_iterations={iterations}: "
                                "both must be ≥ 1")
        self.iterations = iterations
        self.register_buffer("window", torch.zeros(window, num_classes))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self._seen = 0  # `seen` on the host: reading the buffer would wait for the device at every step
        self.register_buffer("log_weights", torch.zeros(num_classes))
        self.register_buffer("target", torch.full((num_classes,), 1.0 / num_classes))

    def set_target(self, class_prior: Tensor) -> None:
        """The class marginal to align to (a class never labeled keeps a tiny share, not zero)."""
        prior = torch.as_tensor(class_prior, dtype=torch.float64).clamp_min(1e-6)
        self.target.copy_(prior / prior.sum())

    def forward(self, probs: Tensor) -> Tensor:
        """Add `probs` (N × classes) to the window, update the weights, return `probs` aligned."""
        self._remember(_all_ranks(probs.detach().float()))
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


def _all_ranks(t: Tensor) -> Tensor:
    """`t` from every DDP rank, concatenated (itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
