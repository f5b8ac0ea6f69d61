"""AdaMatch (Berthelot et al., ICLR 2022) for semi-supervised learning: FixMatch whose labeled logits are a random
interpolation of two batch-norm contexts, with a confidence threshold relative to the labeled batch, distribution
alignment towards the labeled predictions and a cosine ramp of the unlabeled weight (conf/algorithm/adamatch.yaml
holds the parts and the ramp; this file the interpolation)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from ssl_train.algorithms.fixmatch import FixMatch

_STREAM = 0xADA  # keeps λ's draws apart from other draws seeded by (seed, step)


class AdaMatch(FixMatch):
    """FixMatch (hard pseudo-labels, cross-entropy to the strong view) with random logit interpolation.

    The labeled batch passes twice: with the unlabeled views (batch norm normalizes by the joint batch, z_joint)
    and alone (by the labeled batch only, z_alone, in train mode as in the paper). Its logits are
    z = λ·z_alone + (1 − λ)·z_joint with λ ~ U(0, 1) drawn per logit, so the network must do well under both
    statistics; the supervised loss, the relative threshold and the alignment target all use z. λ comes from a
    generator seeded by (run seed, step, rank): a run repeats its numbers and a resumed run continues them.

    The alone pass runs on copies of the network's buffers, so batch-norm running statistics are updated once per
    step, by the joint pass (the official implementation restores its variables after the alone pass likewise).
    Masking (`RelativeThreshold`), alignment (`RatioAlignment`, target "predictions") and the ramp
    (`rampup: cosine`) are FixMatch's and the base's options, set in the config.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = torch.initial_seed()  # the run seed: ssl-train seeds everything before it builds the module
        self._generator: torch.Generator | None = None

    def interpolation_weights(self, shape: torch.Size, device: torch.device) -> Tensor:
        """λ ~ U(0, 1) of `shape` on `device`, the same for the same (run seed, step, rank). The step is the
        trainer's host-side count (`batch["step"]` is on the device: reading it would wait for the device)."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
        rng = np.random.default_rng([self.seed, self.global_step, self.global_rank, _STREAM])
        return torch.rand(shape, generator=self._generator.manual_seed(int(rng.integers(2**62))), device=device)

    def labeled_alone(self, x: Tensor) -> Tensor:
        """Logits of the labeled batch by itself, in train mode, leaving the network's buffers untouched."""
        buffers = {name: b.clone() for name, b in self.net.named_buffers()}
        return functional_call(self.net, buffers, (self._input(x),))

    def forward_views(self, *views: Tensor) -> tuple[Tensor, ...]:
        """FixMatch's joint forward (labeled view first), its labeled logits replaced by the interpolation."""
        logits_joint, *rest = super().forward_views(*views)
        logits_alone = self.labeled_alone(views[0])
        lam = self.interpolation_weights(logits_joint.shape, logits_joint.device)
        return (logits_joint + lam * (logits_alone - logits_joint), *rest)
