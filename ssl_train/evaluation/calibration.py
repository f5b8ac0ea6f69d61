"""Calibration: ECE and MCE, the reliability diagram's bins, and temperature scaling.

ECE/MCE are torchmetrics' (15 equal-width confidence bins, L1 and max norm),
as in training's `test/ece`. Temperature scaling (Guo et al., 2017) divides the
logits by one scalar T fitted on the validation split by minimizing the NLL
(LBFGS over log T, so T stays positive); it changes confidences, never the
predicted class. `fold_temperature` writes T into the network's last linear
layer, so an exported model carries it with no extra operation.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.classification import multiclass_calibration_error


def calibration_errors(probs: Tensor, labels: Tensor, bins: int = 15) -> dict[str, float]:
    """Expected and maximum calibration error over `bins` equal-width confidence bins."""
    k = probs.shape[1]
    return {"ece": float(multiclass_calibration_error(probs, labels, k, n_bins=bins, norm="l1")),
            "mce": float(multiclass_calibration_error(probs, labels, k, n_bins=bins, norm="max"))}


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict]:
    """Per confidence bin [lower, upper): sample count, mean confidence and accuracy (None when empty).

    The bins are torchmetrics', so Σ count/n · |accuracy − confidence| is its ECE, except that a
    confidence of exactly 1.0 joins the top bin here (torchmetrics gives it a bin of its own).
    """
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        out.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n,
                    "confidence": float(confidence[members].mean()) if n else None,
                    "accuracy": float(correct[members].mean()) if n else None})
    return out


def nll(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels))


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 200) -> float:
    """The T > 0 minimizing the NLL of softmax(logits / T) on these (validation) samples."""
    logits, labels = logits.detach().double(), labels.detach()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, tolerance_grad=1e-10,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def fold_temperature(network: nn.Module, temperature: float) -> nn.Module:
    """A copy of `network` whose logits are divided by `temperature`, folded into its last linear layer.

    (W·h + b) / T = (W/T)·h + b/T: exact, and exporters see an ordinary network.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    network = copy.deepcopy(network)
    head = getattr(getattr(network, "backbone", network), "head", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(network).__name__} has no linear 'head' layer to fold a temperature into")
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)
    return network
