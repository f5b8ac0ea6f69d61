"""What a model card reports about a model: test metrics and CPU latency.

Metrics are the training run's own (`eval_metrics`: accuracy, macro-F1, ECE
with 15 bins), computed on the run's test split, so an artifact's numbers are
directly comparable with the run's `metrics.json`. Latency is the median of
repeated forward passes on CPU after a warm-up, at the machine's thread count
unless told otherwise; the median resists the outliers of a shared machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from ssl_train.algorithms.base import eval_metrics

Predict = Callable[[Tensor], Tensor]


def evaluate(predict: Predict, batches: list[tuple[Tensor, Tensor]], num_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 and expected calibration error of `predict` (pixels → logits)."""
    metrics = eval_metrics(num_classes, prefix="")
    with torch.inference_mode():
        for x, y in batches:
            metrics.update(predict(x).float().softmax(-1), y)
    return {k: float(v) for k, v in metrics.compute().items()}


@contextmanager
def threads(count: int | None) -> Iterator[int]:
    """Run with `count` intra-op threads (None: as configured on this machine); yields the count in use."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def latency_ms(predict: Predict, x: Tensor, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass on `x`, in milliseconds."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            predict(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def num_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cpu_name() -> str:
    """The CPU model as the OS names it (for the latency columns), with the core count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical cores"
