"""torch.export artifacts: `model.pt2` (the forward-looking format) and, as an optional extra, ONNX.

Both are exported with a symbolic batch dimension (`torch.export.Dim`), so one
file serves any batch size; the example batch has more than one sample so that
export does not specialize the dimension to 1. Each file is loaded back and
checked against the eager model at two batch sizes before it gets its name.
`model.onnx` carries what a runtime without ssl_train needs in its metadata_props
(`onnx_metadata`: classes, input shape and scaling, the folded temperature).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
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


def onnx_metadata(classes: Sequence[str], input_shape: Sequence[int], raw_scale: float, mean: Sequence[float],
                  std: Sequence[float], temperature: float | None) -> dict[str, str]:
    """model.onnx's metadata_props, each value JSON: the class names in output order, the input the graph takes
    (float32 N×C×H×W "pixels" in [0, 1] = raw pixel value × raw_scale; normalization by mean/std happens inside
    the graph) and the temperature already divided into its "logits" (null: none)."""
    values = {"classes": [str(c) for c in classes], "input_name": "pixels", "input_shape": ["N", *input_shape],
              "input_dtype": "float32", "input_layout": "NCHW", "input_range": [0.0, 1.0], "raw_scale": raw_scale,
              "normalization": {"mean": list(mean), "std": list(std), "inside_model": True},
              "output_name": "logits", "temperature": temperature}
    return {key: json.dumps(value) for key, value in values.items()}


def export_onnx(model: nn.Module, path: str | Path, inputs: list[Tensor], atol: float,
                metadata: dict[str, str] | None = None) -> dict:
    """ONNX (dynamo exporter) with a dynamic batch dimension, input "pixels", output "logits", and `metadata`
    (`onnx_metadata`) added to the model's metadata_props.

    The file must pass `onnx.checker` and, run by onnxruntime, match the eager model within `atol` and report
    the metadata back.
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
        if metadata:
            proto = onnx.load(str(tmp))
            onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **metadata})
            onnx.save(proto, str(tmp))

    def verify(tmp: Path) -> None:
        import onnxruntime

        onnx.checker.check_model(str(tmp), full_check=True)
        run = onnx_predictor(tmp)
        result["max_abs_diff"] = check_parity(Path(path).name, expected, [run(x) for x in inputs], atol)
        read = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).get_modelmeta()
        if metadata and {k: read.custom_metadata_map.get(k) for k in metadata} != metadata:
            raise SSLTrainError(f"{Path(path).name}: its metadata does not read back from the written file")

    write_atomic(path, save, verify)
    return result


def onnx_predictor(path: str | Path):
    """pixels → logits through an onnxruntime CPU session."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"pixels": x.numpy()})[0])
