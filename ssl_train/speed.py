"""Speed options that change how the network runs, not what it computes: channels_last and torch.compile.

bf16 autocast (`trainer.precision`), cudnn autotuning (`trainer.benchmark`) and
the fused optimizer (`optimizer.fused`) are options of Lightning and torch
themselves and need nothing here; `conf/speed/fast.yaml` turns all of them on.
"""

from __future__ import annotations

import torch

from ssl_train.algorithms.base import SSLAlgorithm


def apply(model: SSLAlgorithm, channels_last: bool = False, compile: bool = False,
          compile_mode: str | None = None) -> SSLAlgorithm:
    """Put `model`'s networks in NHWC memory format and/or compile the trained network in place.

    `nn.Module.compile` (not `torch.compile(module)`) keeps the parameter names,
    so checkpoints, the EMA copy and export see the same state dict either way.
    The EMA copy is left uncompiled: it only runs at evaluation.
    """
    if channels_last:
        model.channels_last = True
        model.net.to(memory_format=torch.channels_last)
        if model.ema is not None:
            model.ema.module.to(memory_format=torch.channels_last)
    if compile:
        model.net.compile(mode=compile_mode)
    return model
