"""Calibration, one implementation for every tool: ECE and MCE, reliability bins, temperature scaling.

ECE/MCE are torchmetrics' (equal-width confidence bins, L1 and max norm), as in
training's `test/ece`, whether computed from probabilities or from (confidence,
correct) pairs. Temperature scaling (Guo et al., 2017) divides the logits by one
scalar T fitted on the validation split by minimizing the NLL (bounded 1-D search
over log T: T stays positive and finite even when every validation sample is
right); it changes confidences, never the predicted class. `fold_temperature`
writes T into the network's last linear layer, so an exported model carries it
with no extra operation.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import optimize
from torch import Tensor, nn
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from ssl_train.errors import SSLTrainError


def calibration_errors(probs: Tensor, labels: Tensor, bins: int = 15) -> dict[str, float]:
    """Expected and maximum calibration error over `bins` equal-width confidence bins."""
    k = probs.shape[1]
    return {"ece": float(multiclass_calibration_error(probs, labels, k, n_bins=bins, norm="l1")),
            "mce": float(multiclass_calibration_error(probs, labels, k, n_bins=bins, norm="max"))}


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE of (max-softmax confidence, prediction correct) pairs: the same bins and value as `calibration_errors`."""
    confidence = torch.as_tensor(np.asarray(confidence), dtype=torch.float64)
    if len(confidence) == 0:
        return 0.0
    correct = torch.as_tensor(np.asarray(correct)).long()
    return float(binary_calibration_error(confidence, correct, n_bins=bins, norm="l1"))


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


def fit_temperature(logits: Tensor | np.ndarray, labels: Tensor | np.ndarray,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T in `bounds` minimizing the NLL of softmax(logits / T) on these (validation) samples.

    One parameter, so it cannot overfit a small validation split; 1.0 when there are no samples.
    """
    z = torch.as_tensor(np.asarray(logits) if isinstance(logits, np.ndarray) else logits.detach(),
                        dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels) if isinstance(labels, np.ndarray) else labels.detach(), dtype=torch.long)
    if len(y) == 0:
        return 1.0
    result = optimize.minimize_scalar(lambda log_t: float(F.cross_entropy(z / math.exp(log_t), y)),
                                      bounds=tuple(math.log(b) for b in bounds), method="bounded",
                                      options={"xatol": 1e-4})
    return float(math.exp(result.x))


def fold_temperature(network: nn.Module, temperature: float) -> nn.Module:
    """A copy of `network` whose logits are divided by `temperature`, folded into its last linear layer.

    (W·h + b) / T = (W/T)·h + b/T: exact, and exporters see an ordinary network.
    """
    if not temperature > 0:
        raise SSLTrainError(f"temperature={temperature}: expected a positive number")
    network = copy.deepcopy(network)
    head = getattr(getattr(network, "backbone", network), "head", None)
    if not isinstance(head, nn.Linear):
        raise SSLTrainError(f"{type(network).__name__} has no linear 'head' layer to fold a temperature into")
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)
    return network
