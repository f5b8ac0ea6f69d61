"""Accuracy under common image corruptions, at three severities each.

Severities follow the spirit of CIFAR-10-C (Hendrycks & Dietterich, 2019), on
pixels in [0, 1]: Gaussian noise of std σ, Gaussian blur of σ pixels, contrast
scaled towards each image's mean by a factor c, rotation by ±θ degrees (sign
drawn per image). Noise and signs come from a seeded generator, so a report is
reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.08, 0.16),   # std
    "blur": (0.5, 1.0, 1.5),                # Gaussian sigma, pixels
    "contrast": (0.6, 0.4, 0.2),            # factor towards the image mean (1 = unchanged)
    "rotation": (10.0, 20.0, 30.0),         # degrees
}


def corrupt(x: Tensor, kind: str, value: float, generator: torch.Generator) -> Tensor:
    """`x` (N×C×H×W in [0, 1]) under one corruption of strength `value`; the result stays in [0, 1]."""
    if kind == "gaussian_noise":
        return (x + value * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    if kind == "blur":
        size = min(2 * int(3 * value + 0.5) + 1, 2 * (min(x.shape[-2:]) // 2) - 1)  # odd, reflect-padding safe
        return TF.gaussian_blur(x, kernel_size=[max(size, 1)] * 2, sigma=[value, value])
    if kind == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (mean + value * (x - mean)).clamp(0, 1)
    if kind == "rotation":
        sign = torch.randint(0, 2, (len(x),), generator=generator).bool()
        out = x.clone()
        for angle, members in ((value, sign), (-value, ~sign)):
            if members.any():
                out[members] = TF.rotate(x[members], angle, interpolation=TF.InterpolationMode.BILINEAR)
        return out
    raise ValueError(f"unknown corruption {kind!r}; known: {sorted(SEVERITIES)}")


def robustness(predict: Callable[[Tensor], Tensor], batches: Iterable[tuple[Tensor, Tensor]],
               severities: dict[str, tuple[float, ...]] | None = None, seed: int = 0) -> dict:
    """Accuracy of `predict` on every corruption and severity: {kind: [{severity, value, acc}]}."""
    severities = severities or SEVERITIES
    batches = list(batches)
    out = {}
    with torch.inference_mode():
        for kind, values in severities.items():
            rows = []
            for level, value in enumerate(values, start=1):
                generator = torch.Generator().manual_seed(seed * 1000 + level)
                hits = total = 0
                for x, y in batches:
                    hits += int((predict(corrupt(x, kind, value, generator)).argmax(-1) == y).sum())
                    total += len(y)
                rows.append({"severity": level, "value": value, "acc": hits / total})
            out[kind] = rows
    return out
