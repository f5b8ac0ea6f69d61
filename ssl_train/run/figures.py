"""Figure primitives shared by the tools' reports, each returned as PNG bytes.

Figures are built with `matplotlib.figure.Figure` and rendered by the Agg
canvas directly: no pyplot, no global backend switch, no display needed.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

BLUE, ORANGE, GREY, RED = "#1f77b4", "#ff7f0e", "#7f7f7f", "#d62728"


def png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def image_grid(images: list[np.ndarray], captions: list[str], columns: int = 8, title: str = "") -> bytes:
    """Small images (H×W or H×W×3, floats in [0, 1]) in a grid with a caption under each."""
    rows = max(1, math.ceil(len(images) / columns))
    fig = Figure(figsize=(1.6 * columns, 1.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, captions):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return png(fig)


def bars(labels: list[str], values: list[float], title: str, ylabel: str) -> bytes:
    fig = Figure(figsize=(min(4 + 0.45 * len(labels), 14), 3.6))
    ax = fig.add_subplot()
    ax.bar(range(len(labels)), values, color=BLUE)
    if len(labels) <= 40:
        ax.set_xticks(range(len(labels)), labels, rotation=90 if max(map(len, labels), default=0) > 3 else 0)
    ax.set(title=title, ylabel=ylabel)
    return png(fig)
