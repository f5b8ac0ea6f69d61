"""examples/cpp builds against the torch wheel's libtorch and reproduces Python's logits bit for bit.

Slow: building the example compiles libtorch's headers (about 20-30 s on one core of a 2-core CPU, longer
when the machine is busy), on top of the shared digits training run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_train.export.measure import threads
from ssl_train.export.pipeline import ExportOptions, export_checkpoint
from ssl_train.io import write_json_atomic
from ssl_train.run.artifacts import load_torchscript

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cpp"
MODELS = ("model.ts", "model_int8.ts")
# Only the two TorchScript files, measured briefly: the C++ side needs nothing else.
TORCHSCRIPT_ONLY = ExportOptions(pt2=False, reference_profile=False, calibration_samples=256, latency_repeats=1,
                                 latency_warmup=0, latency_threads=1)
CMAKE = shutil.which("cmake")
CXX = next(filter(None, map(shutil.which, [os.environ.get("CXX", "c++"), "g++", "clang++"])), None)
MISSING = [name for name, found in (("cmake", CMAKE), ("a C++ compiler (c++, g++ or clang++)", CXX)) if not found]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(MISSING), reason=f"building examples/cpp needs {' and '.join(MISSING)} on PATH")]


@pytest.fixture(scope="module")
def ssl_predict(tmp_path_factory) -> Path:
    """The example built out of source as the README says, naming the compiler found and the wheel's C++ ABI."""
    build = tmp_path_factory.mktemp("cpp_build")
    abi = "ON" if torch.compiled_with_cxx11_abi() else "OFF"
    start = time.perf_counter()
    for command in ([CMAKE, "-S", str(EXAMPLE), "-B", str(build), f"-DCMAKE_CXX_COMPILER={CXX}",
                     f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", f"-DSSL_CXX11_ABI={abi}"],
                    [CMAKE, "--build", str(build), "-j2"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    print(f"examples/cpp configured and built in {time.perf_counter() - start:.1f} s")
    return build / "ssl_predict"


@pytest.fixture(scope="module")
def export_dir(digits_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cpp_export")
    with threads(1):
        export_checkpoint(digits_ckpt, out, TORCHSCRIPT_ONLY)
    return out


@pytest.fixture
def images(digits_test, tmp_path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """The first 16 test images as the .npy the example reads, as a tensor, and their labels."""
    x, y = digits_test[0][:16].contiguous(), digits_test[1][:16]
    path = tmp_path / "images.npy"
    np.save(path, x.numpy())
    return path, x, y


def predict(binary: Path, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def table(stdout: str) -> list[tuple[str, float]]:
    """(class, probability) per image from the example's output."""
    header, *rows = stdout.strip().splitlines()
    assert header == "index\tclass\tprobability"
    assert [row.split("\t")[0] for row in rows] == [str(i) for i in range(len(rows))]
    return [(row.split("\t")[1], float(row.split("\t")[2])) for row in rows]


@pytest.mark.parametrize("name", MODELS)
def test_cpp_logits_are_bit_identical_to_python(name, ssl_predict, export_dir, images, tmp_path, one_thread_env):
    path, x, y = images
    out = tmp_path / "logits.npy"
    result = predict(ssl_predict, export_dir / name, path, "--output", out, "--threads", 1, env=one_thread_env)
    assert result.returncode == 0, result.stderr
    with torch.inference_mode():  # one thread here too (tests/conftest.py)
        expected = load_torchscript(export_dir / name)(x)

    logits = np.load(out)
    assert logits.dtype == np.float32 and logits.shape == (16, 10)
    assert np.array_equal(logits, expected.numpy()), np.abs(logits - expected.numpy()).max()
    confidence, predicted = expected.softmax(1).max(1)
    rows = table(result.stdout)
    assert [c for c, _ in rows] == [str(int(k)) for k in predicted]  # digits' classes are "0".."9"
    assert np.allclose([p for _, p in rows], confidence.numpy(), atol=1e-6, rtol=0)
    assert (predicted == y).float().mean() > 0.8  # a trained model fed the right pixels


def test_class_names_come_from_metadata(ssl_predict, export_dir, images, tmp_path):
    """Names from metadata.json (beside the model by default, or --metadata), \\u escapes decoded; indices without."""
    path = images[0]
    plain = tmp_path / "no_metadata"
    plain.mkdir()
    shutil.copy(export_dir / "model.ts", plain)
    indices = table(predict(ssl_predict, plain / "model.ts", path).stdout)

    names = [f'digit "{i}" \\ ünf ✓ 😀' for i in range(10)]  # JSON escapes, \u escapes, a surrogate pair
    renamed = tmp_path / "renamed.json"
    write_json_atomic(renamed, {**json.loads((export_dir / "metadata.json").read_text()), "classes": names})
    named = table(predict(ssl_predict, plain / "model.ts", path, "--metadata", renamed).stdout)
    assert [c for c, _ in named] == [names[int(c)] for c, _ in indices]
    beside = table(predict(ssl_predict, export_dir / "model.ts", path).stdout)
    assert beside == indices  # the export's own metadata.json: classes "0".."9"


def test_bad_input_is_one_error_line(ssl_predict, export_dir, images, tmp_path):
    path, x, _ = images
    np.save(tmp_path / "f64.npy", x.double().numpy())
    np.save(tmp_path / "rgb.npy", x.expand(-1, 3, -1, -1).contiguous().numpy())
    cases = {
        (tmp_path / "missing.ts", path): "missing.ts: cannot load as TorchScript",
        (export_dir / "model.ts", tmp_path / "f64.npy"): "f64.npy: dtype '<f8', expected float32",
        (export_dir / "model.ts", export_dir / "metadata.json"): "metadata.json: not a NumPy .npy file",
        (export_dir / "model.ts", tmp_path / "rgb.npy"): "(shape [16, 3, 8, 8]): RuntimeError: Given groups=1",
    }
    for args, message in cases.items():
        result = predict(ssl_predict, *args)
        assert result.returncode == 1 and result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
