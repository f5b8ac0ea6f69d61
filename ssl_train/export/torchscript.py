"""TorchScript artifacts: scripted where possible, traced otherwise, frozen, checked against a reference.

TorchScript is deprecated in current torch (every `torch.jit` call warns) but
it is still the format that loads with nothing but `torch` (and from C++ via
libtorch), and the only one in which `torch.ao` int8 models can be saved; see
`quantize.py` for that choice. The warnings are silenced around our own calls
only (`quiet_deprecations`), never globally, so a user's own code still sees them.

Freezing inlines the weights as constants for inference. `optimize_numerics`
is off: it folds batch norm into convolutions, which moves logits by ~1e-6 and
makes the 1e-5 parity promise depend on the model's depth.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ssl_train.export.artifact import check_parity
from ssl_train.io import write_atomic
from ssl_train.run.artifacts import load_torchscript, quiet_deprecations


def to_torchscript(module: nn.Module, example: Tensor) -> tuple[torch.jit.ScriptModule, str]:
    """Script `module` (keeps any control flow); trace it on `example` when it does not script. Then freeze.

    Returns the frozen module and "script" or "trace". An FX GraphModule (the
    int8 model) is traced directly: it is straight-line code by construction, so
    tracing is exact, while its generated code carries type names TorchScript
    cannot parse.
    """
    module = module.eval()
    with quiet_deprecations(), torch.no_grad():
        compiled, method = None, "trace"
        if not isinstance(module, torch.fx.GraphModule):
            try:
                compiled, method = torch.jit.script(module), "script"
            except Exception:  # TorchScript's frontend raises many types for unsupported Python
                pass
        if compiled is None:
            with warnings.catch_warnings():
                # FX quantized graphs hold their scales as tensors; tracing turns them into the constants they are.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                compiled = torch.jit.trace(module, example, check_trace=False)
        return torch.jit.freeze(compiled.eval(), optimize_numerics=False), method


def export_torchscript(module: nn.Module, path: str | Path, inputs: list[Tensor], atol: float,
                       reference: nn.Module | None = None) -> dict:
    """Write `module` as frozen TorchScript to `path`, verified against `reference` (default: `module`).

    `inputs` are batches of different sizes: the file is loaded back and must
    reproduce the reference on each within `atol` (max absolute difference),
    else nothing is written. Returns {"method", "max_abs_diff"}.
    """
    reference = (reference or module).eval()
    with torch.no_grad():
        expected = [reference(x) for x in inputs]
    scripted, method = to_torchscript(module, inputs[-1])
    result = {"method": method}

    def save(tmp: Path) -> None:
        with quiet_deprecations():
            torch.jit.save(scripted, str(tmp))

    def verify(tmp: Path) -> None:
        loaded = load_torchscript(tmp)
        with torch.no_grad():
            result["max_abs_diff"] = check_parity(Path(path).name, expected, [loaded(x) for x in inputs], atol)

    write_atomic(path, save, verify)
    return result
