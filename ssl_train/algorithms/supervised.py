"""Supervised baseline: labeled data only. Every SSL method must beat it at the same label budget."""

import torch.nn.functional as F

from ssl_train.algorithms.base import SSLAlgorithm, StepLosses


class Supervised(SSLAlgorithm):
    unlabeled_views = ()

    def losses(self, batch: dict) -> StepLosses:
        return StepLosses(sup=F.cross_entropy(self.net(batch["lb"]["x"]), batch["lb"]["y"]))
