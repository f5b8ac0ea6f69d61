"""The EMA copy of a network, updated without waiting for the device."""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ssl_train import losses as L_


class EMA(AveragedModel):
    """An exponential moving average of `net`'s parameters and buffers with Mean Teacher's warm-up: update k mixes
    in the network with weight 1 − min(1 − 1/(k+1), decay), so the first update copies it.

    torch's AveragedModel reads its update count (`n_averaged`, a buffer on the device) at every update, which
    makes the host wait for the device once per step. The count is mirrored on the host here, and restored with a
    checkpoint; `n_averaged` is still kept, so checkpoints hold the same keys (`ema.module.*`, `ema.n_averaged`).
    """

    def __init__(self, net: nn.Module, decay: float):
        super().__init__(net, use_buffers=True)
        self.decay = decay
        self.updates = 0
        self.requires_grad_(False)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        d = L_.ema_decay(self.updates, self.decay)
        pairs = [(ours, theirs.detach().to(ours.device))
                 for ours, theirs in zip([*self.module.parameters(), *self.module.buffers()],
                                         [*model.parameters(), *model.buffers()])]
        floats = [pair for pair in pairs if pair[0].is_floating_point()]
        if floats:  # d·ema + (1 − d)·net, one kernel per operation for all tensors
            ours, theirs = (list(t) for t in zip(*floats))
            mixed = torch._foreach_mul(theirs, 1.0 - d)
            torch._foreach_mul_(ours, d)
            torch._foreach_add_(ours, mixed)
        for ours, theirs in pairs:
            if not ours.is_floating_point():  # counters (batch norm's num_batches_tracked)
                ours.copy_(d * ours + (1.0 - d) * theirs)
        self.n_averaged += 1
        self.updates += 1

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "n_averaged" in state_dict:  # read once, when a checkpoint is restored
            self.updates = int(state_dict[prefix + "n_averaged"])
