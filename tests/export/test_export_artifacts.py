"""ssl-export's artifacts: round trip in a process without ssl_train, parity, int8 accuracy, the card."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_train.errors import SSLTrainError
from ssl_train.export.pipeline import ExportOptions, export_checkpoint
from ssl_train.export.pt2 import export_onnx, onnx_available, onnx_metadata
from ssl_train.export.quantize import quantize_int8
from ssl_train.export.torchscript import export_torchscript
from ssl_train.models.classifier import Classifier
from ssl_train.models.mlp import MLP
from ssl_train.run.artifacts import load_torchscript
from ssl_train.run.checkpoint import load_run

ARTIFACTS = ("model.ts", "model_int8.ts", "model.pt2")


def test_export_writes_every_artifact_metadata_and_card(exported, digits_ckpt):
    out, meta = exported
    assert {p.name for p in out.iterdir()} == {*ARTIFACTS, "metadata.json", "MODEL_CARD.md",  # no temp files
                                               "reference_profile.pt", "reference_profile.json"}  # for ssl-monitor
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert meta["source_checkpoint"]["sha256"] == load_run(digits_ckpt).sha256
    assert meta["classes"] == [str(d) for d in range(10)] and meta["input"]["shape"] == ["N", 1, 8, 8]
    assert meta["input"]["raw_scale"] == 1 / 16 and meta["input"]["scaling"] == "raw pixel value / 16"
    assert meta["training"]["algorithm"] == "Supervised" and meta["training"]["num_labels"] == 500
    for name in ARTIFACTS:
        entry = meta["artifacts"][name]
        assert entry["size_bytes"] == (out / name).stat().st_size
        assert {"acc", "f1_macro", "ece"} <= entry.keys() and set(entry["latency_ms"]) == {"1", "64"}
    assert meta["export"]["latency"]["threads"] == 1
    card = (out / "MODEL_CARD.md").read_text()
    assert meta["source_checkpoint"]["sha256"] in card and "raw pixel value / 16" in card
    assert all(name in card for name in ARTIFACTS)


@pytest.mark.parametrize("name", ["model.ts", "model_int8.ts", "model.pt2"])
def test_archive_records_are_named_after_the_artifact_not_a_temporary_file(exported, name):
    out, _ = exported
    with zipfile.ZipFile(out / name) as archive:
        roots = {record.split("/")[0] for record in archive.namelist()}
    assert roots == {Path(name).stem}


def test_fp32_artifacts_match_the_eager_model(exported, digits_ckpt):
    out, meta = exported
    model = load_run(digits_ckpt).network
    x = torch.rand(33, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
        assert (load_torchscript(out / "model.ts")(x) - expected).abs().max() <= 1e-5
        assert (torch.export.load(str(out / "model.pt2")).module()(x) - expected).abs().max() <= 1e-5
    assert meta["artifacts"]["model.ts"]["max_abs_diff"] <= 1e-5
    assert meta["artifacts"]["model.ts"]["acc"] == meta["reference"]["acc"]


def test_int8_is_within_one_point_of_fp32_and_much_smaller(exported):
    _, meta = exported
    fp32, int8 = meta["artifacts"]["model.ts"], meta["artifacts"]["model_int8.ts"]
    assert meta["reference"]["acc"] > 0.9  # a model worth quantizing
    assert int8["acc"] >= meta["reference"]["acc"] - 0.01
    # Weights shrink 4x; the TorchScript container's ~10 KB of code, records and per-channel scales does not,
    # and weighs on a model of ~24k parameters (docs/results/export.md).
    assert int8["size_bytes"] * 2.5 < fp32["size_bytes"]
    assert meta["export"]["int8"]["calibration_pool"] == "unlabeled"
    assert meta["export"]["int8"]["calibration_samples"] == 256


CLEAN_CHECK = textwrap.dedent("""
    import sys
    sys.path.append(sys.argv[1])  # torch's site-packages only: no .pth files, so no editable ssl_train
    try:
        import ssl_train
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("ssl_train is importable: the check would prove nothing")
    import torch
    data = torch.load("expected.pt")
    models = {"model.ts": torch.jit.load("model.ts"), "model_int8.ts": torch.jit.load("model_int8.ts"),
              "model.pt2": torch.export.load("model.pt2").module()}
    for name, model in models.items():
        for x, y in zip(data["inputs"], data[name]):
            with torch.no_grad():
                diff = float((model(x) - y).abs().max())
            assert diff <= 1e-5, (name, x.shape, diff)
    print("ok", sorted(models))
""")


def test_artifacts_load_in_a_process_that_has_only_torch(exported, digits_ckpt, tmp_path, one_thread_env):
    out, _ = exported
    model = load_run(digits_ckpt).network
    inputs = [torch.rand(1, 1, 8, 8), torch.rand(5, 1, 8, 8), torch.rand(64, 1, 8, 8)]
    int8 = load_torchscript(out / "model_int8.ts")
    with torch.no_grad():
        fp32 = [model(x) for x in inputs]
        expected = {"inputs": inputs, "model.ts": fp32, "model.pt2": fp32, "model_int8.ts": [int8(x) for x in inputs]}
    for name in ARTIFACTS:
        (tmp_path / name).write_bytes((out / name).read_bytes())
    torch.save(expected, tmp_path / "expected.pt")
    site = str(Path(torch.__file__).resolve().parent.parent)
    result = subprocess.run([sys.executable, "-I", "-S", "-c", CLEAN_CHECK, site], cwd=tmp_path, env=one_thread_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok ['model.pt2', 'model.ts', 'model_int8.ts']" in result.stdout


class ScriptDrifts(nn.Module):
    """Behaves differently once scripted: the parity check must catch it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return x + 1e-3
        return x


def test_failed_parity_leaves_no_artifact(tmp_path):
    with pytest.raises(SSLTrainError, match=r"model.ts: output differs .* nothing was written"):
        export_torchscript(ScriptDrifts(), tmp_path / "model.ts", [torch.rand(1, 3), torch.rand(4, 3)], 1e-5)
    assert list(tmp_path.iterdir()) == []


def test_linear_only_model_gets_dynamic_int8(tmp_path):
    model = Classifier(MLP((1, 8, 8), 10), [0.3], [0.4]).eval()
    x = torch.rand(16, 1, 8, 8)
    quantized, info = quantize_int8(model, [], x)
    assert info["scheme"].startswith("dynamic") and info["calibration_samples"] == 0
    result = export_torchscript(quantized, tmp_path / "model_int8.ts", [x[:1], x], 1e-5, reference=quantized)
    assert result["method"] == "script"
    with torch.no_grad():
        assert (load_torchscript(tmp_path / "model_int8.ts")(x) - model(x)).abs().max() < 0.05


def test_onnx_is_an_optional_extra(tmp_path):
    model = Classifier(MLP((1, 8, 8), 10), [0.3], [0.4]).eval()
    inputs = [torch.rand(1, 1, 8, 8), torch.rand(6, 1, 8, 8)]
    if not onnx_available():
        with pytest.raises(SSLTrainError, match=r"pip install 'ssl_train\[onnx\]'"):
            export_onnx(model, tmp_path / "model.onnx", inputs, 1e-4)
        assert list(tmp_path.iterdir()) == []
    else:
        metadata = onnx_metadata([f"c{k}" for k in range(10)], (1, 8, 8), 1 / 16, [0.3], [0.4], 1.5)
        assert export_onnx(model, tmp_path / "model.onnx", inputs, 1e-4, metadata)["max_abs_diff"] <= 1e-4
        assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
        assert onnx_properties(tmp_path / "model.onnx") == metadata


def onnx_properties(path: Path) -> dict[str, str]:
    """A model.onnx's metadata_props as onnx reads them (onnxruntime must read the same)."""
    import onnx
    import onnxruntime

    read = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == read
    assert [i.name for i in session.get_inputs()] == [json.loads(read["input_name"])]
    return read


def test_ssl_export_onnx_names_classes_input_scaling_and_temperature(digits_ckpt, tmp_path):
    options = ExportOptions(torchscript=False, int8=False, pt2=False, onnx=True, reference_profile=False,
                            latency_repeats=1, latency_warmup=0, latency_batch_sizes=[1], temperature=1.5)
    meta = export_checkpoint(digits_ckpt, tmp_path, options)
    props = {k: json.loads(v) for k, v in onnx_properties(tmp_path / "model.onnx").items()}
    assert props["classes"] == meta["classes"] == [str(d) for d in range(10)]
    assert props["input_shape"] == meta["input"]["shape"] == ["N", 1, 8, 8]
    assert props["raw_scale"] == meta["input"]["raw_scale"] == 1 / 16 and props["input_range"] == [0.0, 1.0]
    assert props["normalization"] == {**meta["input"]["normalization"], "inside_model": True}
    assert props["temperature"] == meta["export"]["temperature"] == 1.5
    assert props["input_dtype"] == "float32" and props["output_name"] == "logits"


class DataDependent(nn.Module):
    """A network FX cannot trace: its control flow depends on the input's values."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x).flatten(1) if x.sum() > 0 else self.conv(-x).flatten(1)


def test_a_network_that_does_not_trace_for_int8_is_one_line_naming_the_way_out():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(SSLTrainError, match=r"^int8: the network does not trace .*export.int8=false\)$"):
        quantize_int8(DataDependent(), [x], x)
