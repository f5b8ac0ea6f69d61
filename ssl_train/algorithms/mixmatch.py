"""MixMatch (Berthelot et al., 2019): labels guessed from K weak views and sharpened, then MixUp of the labeled
and unlabeled samples together."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses
from ssl_train.errors import SSLTrainError
from ssl_train.losses import mixup, sharpen


class MixMatch(SSLAlgorithm):
    """Soft cross-entropy on the mixed labeled samples, softmax MSE on the mixed unlabeled ones.

    An unlabeled image's guessed label is the mean softmax over its `num_views` weak views (no gradient),
    sharpened by `temperature`. The labeled batch (one-hot targets) and every unlabeled view (its image's guess)
    are concatenated, paired by a random permutation and mixed with λ' = max(λ, 1 − λ), λ ~ Beta(α, α), so that
    a mixed sample stays closer to its own original and keeps its part: the mixed labeled samples get the
    supervised loss, the mixed unlabeled ones the unsupervised loss (mean over samples and classes, as USB's
    `mse`). The guess is one forward pass in training mode, and the mixed batch is one more, so batch norm sees
    the whole mixed batch (USB's batch-norm freezing for parts of the batch is not reproduced).

    Randomness: λ and the permutation are a function of (run seed, global step): numpy's SeedSequence of the two
    gives λ and the seed of a torch generator on the batch's device that draws the permutation. The step is
    the trainer's host-side count, not `batch["step"]` (on the device, reading it would wait for the device); a
    resumed run restores it, so it continues the same draws. The run seed is `torch.initial_seed()` when the
    module is built (ssl-train seeds everything first). Every DDP rank draws the same λ.

    Args:
        temperature: sharpening T of the guessed labels (paper: 0.5).
        alpha: α of MixUp's Beta(α, α) (paper: 0.75); 0 turns mixing off (λ = 1).
        num_views: K, the weak views per unlabeled image (paper: 2), named "weak", "weak2", ..., "weakK".
    """

    def __init__(self, *args, temperature: float = 0.5, alpha: float = 0.75, num_views: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        if not (isinstance(temperature, (int, float)) and 0 < temperature <= 1):
            raise SSLTrainError(f"algorithm.temperature={temperature!r}: expected a number in (0, 1]")
        if not (isinstance(alpha, (int, float)) and alpha >= 0):
            raise SSLTrainError(f"algorithm.alpha={alpha!r}: expected a number >= 0 (0: no MixUp)")
        if not (isinstance(num_views, int) and not isinstance(num_views, bool) and num_views >= 1):
            raise SSLTrainError(f"algorithm.num_views={num_views!r}: expected an integer >= 1")
        self.temperature, self.alpha = temperature, alpha
        self.unlabeled_views = ("weak", *(f"weak{k}" for k in range(2, num_views + 1)))
        self.seed = torch.initial_seed()
        self._generator: torch.Generator | None = None

    def mix_draw(self, step: int, n: int, device: torch.device) -> tuple[float, Tensor]:
        """(λ' = max(λ, 1 − λ), a permutation of n samples on `device`): the same for the same seed and step."""
        rng = np.random.default_rng([self.seed, step])
        lam = float(rng.beta(self.alpha, self.alpha)) if self.alpha > 0 else 1.0
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
        self._generator.manual_seed(int(rng.integers(2**62)))
        return max(lam, 1.0 - lam), torch.randperm(n, generator=self._generator, device=device)

    @torch.no_grad()
    def guess(self, views: list[Tensor]) -> Tensor:
        """The guessed labels: the views' mean softmax, sharpened; a target, so without gradient."""
        probs = self.net(self._input(torch.cat(views))).float().softmax(-1)
        return sharpen(probs.view(len(views), -1, probs.shape[-1]).mean(0), self.temperature)

    def losses(self, batch: dict) -> StepLosses:
        x_lb, y_lb = batch["lb"]["x"], batch["lb"]["y"]
        views = [batch["ulb"][view] for view in self.unlabeled_views]
        guessed = self.guess(views)
        inputs = torch.cat([x_lb, *views])
        targets = torch.cat([F.one_hot(y_lb, self.hparams.num_classes).float(), guessed.repeat(len(views), 1)])
        lam, perm = self.mix_draw(self.global_step, len(inputs), inputs.device)
        mixed_x, mixed_y = mixup(inputs, targets, lam, perm)
        logits = self.net(self._input(mixed_x)).float()
        n = len(x_lb)
        return StepLosses(sup=F.cross_entropy(logits[:n], mixed_y[:n]),
                          unsup=F.mse_loss(logits[n:].softmax(-1), mixed_y[n:]),
                          weights=torch.ones_like(guessed[:, 0]), pseudo_labels=guessed.argmax(-1))
