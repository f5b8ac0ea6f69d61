"""int8 post-training quantization, calibrated on the unlabeled pool.

The route: `torch.ao.quantization` FX graph mode, static quantization with the
default x86 (fbgemm) qconfig: per-channel int8 weights, histogram-calibrated
uint8 activations; conv + batch norm + ReLU are fused first. The result is
TorchScripted and frozen (`torchscript.py`). Why this route:

- PT2E quantization now lives in the separate torchao package, and its int8
  models do not TorchScript; torch.export of them needs the torchao runtime.
- `torch.ao.quantization` is deprecated but works in torch 2.14, and its int8
  models script, freeze and load with plain `torch.jit.load`. Its deprecation
  notices are silenced around these calls only.
- Eager-mode static quantization would need QuantStub/DeQuantStub and fusion
  lists written into every model; FX mode needs nothing from the models.

Calibration uses the unlabeled pool (falling back to the labeled set when
there is none): it is data an SSL user already has, drawn from the deployment
distribution, and unlike the test split it is not used to report accuracy.

Models without convolutions (the MLP) get dynamic quantization of their Linear
layers instead (int8 weights, activations quantized on the fly per batch),
which needs no calibration and is the standard recipe for linear-only models.
Dynamic quantization of Linear alone gives a CNN no speed-up (its time is in
the convolutions), which is why conv models take the static route.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from ssl_train.errors import SSLTrainError, first_line
from ssl_train.run.artifacts import quiet_deprecations

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def quantization_engine() -> str:
    """x86 (fbgemm + onednn) where available, else qnnpack (ARM)."""
    engines = torch.backends.quantized.supported_engines
    return "x86" if "x86" in engines else "qnnpack"


@contextmanager
def _engine(name: str) -> Iterator[None]:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def is_linear_only(model: nn.Module) -> bool:
    return not any(isinstance(m, CONV_TYPES) for m in model.modules())


def quantize_int8(model: nn.Module, calibration: Iterable[Tensor], example: Tensor) -> tuple[nn.Module, dict]:
    """An int8 copy of `model` (left untouched) and a description of the scheme.

    `calibration` yields float batches in the model's input units (pixels in
    [0, 1]); it is consumed only by static quantization.
    """
    model = copy.deepcopy(model).cpu().eval()
    for module in model.modules():  # quantized kernels have no in-place variants and warn on every call
        if getattr(module, "inplace", False):
            module.inplace = False
    engine = quantization_engine()
    with _engine(engine), quiet_deprecations(), torch.no_grad():
        if is_linear_only(model):
            quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
            return quantized, {"scheme": "dynamic (Linear weights int8, activations quantized per batch)",
                               "engine": engine, "calibration_samples": 0}
        try:
            prepared = prepare_fx(model, get_default_qconfig_mapping(engine), example_inputs=(example,))
        except Exception as exc:  # symbolic tracing rejects data-dependent control flow (e.g. dynamic-size ViTs)
            raise SSLTrainError(f"int8: the network does not trace for FX quantization ({first_line(exc)}); "
                                "export it without int8 (export.int8=false)") from None
        seen = 0
        for batch in calibration:
            prepared(batch)
            seen += len(batch)
        if not seen:
            raise SSLTrainError("int8 calibration received no samples: the unlabeled and labeled pools are empty")
        quantized = convert_fx(prepared)
    return quantized, {"scheme": "static FX post-training (per-channel int8 weights, uint8 activations)",
                       "engine": engine, "calibration_samples": seen}
