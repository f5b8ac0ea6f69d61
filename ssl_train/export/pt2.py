"""torch.export artifacts: `model.pt2` (the forward-looking format) and, as an optional extra, ONNX.

Both are exported with a symbolic batch dimension (`torch.export.Dim`), so one
file serves any batch size; the example batch has more than one sample so that
export does not specialize the dimension to 1. Each file is loaded back and
checked against the eager model at two batch sizes before it gets its name.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from ssl_train.errors import SSLTrainError
from ssl_train.export.artifact import check_parity
from ssl_train.io import write_atomic
from ssl_train.run.artifacts import load_program

ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")


def _dynamic_batch(example: Tensor) -> tuple[dict[int, torch.export.Dim], ...]:
    if len(example) < 2:
        raise ValueError("the example batch for a dynamic batch dimension needs at least 2 samples")
    return ({0: torch.export.Dim("batch", min=1)},)


def export_program(model: nn.Module, path: str | Path, inputs: list[Tensor], atol: float) -> dict:
    """`torch.export` `model` with a dynamic batch dimension to `path` (.pt2), verified on `inputs`."""
    model = model.eval()
    with torch.no_grad():
        expected = [model(x) for x in inputs]
        program = torch.export.export(model, (inputs[-1],), dynamic_shapes=_dynamic_batch(inputs[-1]))
    result: dict = {}

    def verify(tmp: Path) -> None:
        loaded = load_program(tmp)
        with torch.no_grad():
            result["max_abs_diff"] = check_parity(Path(path).name, expected, [loaded(x) for x in inputs], atol)

    write_atomic(path, lambda tmp: torch.export.save(program, str(tmp)), verify)
    return result


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ONNX_MODULES)


def require_onnx() -> None:
    if not onnx_available():
        raise SSLTrainError("export.onnx=true needs the onnx extra: pip install 'ssl_train[onnx]' "
                            f"(modules {', '.join(ONNX_MODULES)})")


def export_onnx(model: nn.Module, path: str | Path, inputs: list[Tensor], atol: float) -> dict:
    """ONNX (dynamo exporter) with a dynamic batch dimension, input "pixels", output "logits".

    The file must pass `onnx.checker` and, run by onnxruntime, match the eager model within `atol`.
    """
    require_onnx()
    import onnx

    model = model.eval()
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    result: dict = {}

    def save(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(model, (inputs[-1],), str(tmp), dynamo=True, input_names=["pixels"],
                              output_names=["logits"], dynamic_shapes=_dynamic_batch(inputs[-1]),
                              external_data=False, verbose=False)

    def verify(tmp: Path) -> None:
        onnx.checker.check_model(str(tmp), full_check=True)
        run = onnx_predictor(tmp)
        result["max_abs_diff"] = check_parity(Path(path).name, expected, [run(x) for x in inputs], atol)

    write_atomic(path, save, verify)
    return result


def onnx_predictor(path: str | Path):
    """pixels → logits through an onnxruntime CPU session."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"pixels": x.numpy()})[0])
