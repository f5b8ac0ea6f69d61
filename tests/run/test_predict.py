"""Batch prediction (ssl_train/run/predict.py) on the shared trained digits run and its export: the same numbers as
ssl-eval's predictor and ssl-eval itself, every model path, both formats, any chunking, and bad input that leaves
no file."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ssl_train.calibration import fit_temperature
from ssl_train.cli import data_config, run_cli
from ssl_train.evaluation.pipeline import EvalOptions, evaluate
from ssl_train.predict_cli import _task
from ssl_train.run.artifacts import LoadedModel, load_model
from ssl_train.run.batches import float_batches
from ssl_train.run.inputs import Inputs
from ssl_train.run.predict import PredictOptions, model_temperature, predict
from ssl_train.run.profile import load_profile
from ssl_train.run.safety import Trust

QUICK_EVAL = EvalOptions(bootstrap=10, robustness=False, membership=False)


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def probabilities(rows: list[list[str]]) -> np.ndarray:
    """The p_* columns, parsed back to the float32 values that were written."""
    return np.array([[np.float32(v) for v in row[3:]] for row in rows])


@pytest.fixture
def folder(digit_folder, tmp_path) -> Path:
    """ROOT/labeled and ROOT/test of digit PNGs (ROOT/test/<digit>/*.png: 8 of each digit, 80 images)."""
    return digit_folder(tmp_path / "digits_png", per_class=8)


def test_folder_predictions_are_ssl_evals(run_dir, folder, compose_cfg, tmp_path):
    """One row per image, in path order, with exactly the probabilities of ssl-eval's predictor at the run's fitted
    temperature; ssl-eval of the same images as an image folder finds the same confusion matrix."""
    result = predict(run_dir, folder / "test", tmp_path / "p.csv", PredictOptions(batch_size=16))
    header, rows = read_csv(tmp_path / "p.csv")
    classes = [str(d) for d in range(10)]
    assert header == ["file", "predicted", "confidence", *(f"p_{c}" for c in classes)]
    files = sorted(p.relative_to(folder / "test").as_posix() for p in (folder / "test").rglob("*.png"))
    assert [r[0] for r in rows] == files and result["rows"] == len(files) == 80

    # The run's tested checkpoint (metrics.json: last.ckpt) and the temperature of its reference profile.
    tested = json.loads((run_dir / "metrics.json").read_text())["test/checkpoint"]
    assert result["model"]["path"] == str(run_dir / "checkpoints" / Path(tested).name)
    temperature = load_profile(run_dir / "reference_profile.pt").temperature
    assert result["temperature"]["value"] == temperature != 1.0
    predictor = load_model(result["model"]["path"]).predict
    with torch.inference_mode():
        expected = torch.cat([(predictor(x) / temperature).softmax(-1)
                              for x, _, _ in Inputs(folder / "test", (1, 8, 8)).chunks(16)]).numpy()
    probs = probabilities(rows)
    assert np.array_equal(probs, expected)
    assert [r[1] for r in rows] == [classes[i] for i in expected.argmax(1)]
    assert np.array_equal([np.float32(r[2]) for r in rows], expected.max(1))

    # ssl-eval's temperature: fit_temperature on the logits of the run's validation split, the profile's fit.
    datamodule = load_model(result["model"]["path"]).run.datamodule()
    x, y = next(float_batches(datamodule.val, datamodule.source.scale, batch_size=len(datamodule.val)))
    with torch.inference_mode():
        assert fit_temperature(predictor(x), y) == pytest.approx(temperature, abs=2e-3)
    data = data_config(compose_cfg("eval", ["ckpt_path=x", "data=image_folder", f"data.root={folder}",
                                            "data.dataset.channels=1", "data.dataset.image_size=[8,8]",
                                            "data.val_size=10", "data.mu=0"]))
    report = evaluate(result["model"]["path"], tmp_path / "eval_folder", QUICK_EVAL, data)
    confusion = np.zeros((10, 10), dtype=int)
    for row in rows:
        confusion[int(row[0].split("/")[0]), int(row[1])] += 1
    assert report["metrics"]["samples"] == 80
    assert confusion.tolist() == report["metrics"]["confusion_matrix"]


def test_csv_and_parquet_agree_whatever_the_chunking(run_dir, digits_test, tmp_path):
    np.save(tmp_path / "x.npy", digits_test[0].numpy())
    predict(run_dir, tmp_path / "x.npy", tmp_path / "p.csv", PredictOptions(batch_size=64))
    chunked = predict(run_dir, tmp_path / "x.npy", tmp_path / "p64.parquet", PredictOptions(batch_size=64))
    predict(run_dir, tmp_path / "x.npy", tmp_path / "p1.parquet", PredictOptions(batch_size=1000))
    one, many = pq.read_table(tmp_path / "p1.parquet"), pq.read_table(tmp_path / "p64.parquet")
    assert one.equals(many)  # CPU kernels give the same numbers in chunks of 64 as in one chunk of 450
    assert one.column_names[:3] == ["index", "predicted", "confidence"] and one.num_rows == 450
    header, rows = read_csv(tmp_path / "p.csv")
    assert header == one.column_names
    assert [int(r[0]) for r in rows] == one["index"].to_pylist() == list(range(450))
    assert [r[1] for r in rows] == one["predicted"].to_pylist()
    assert np.array_equal(probabilities(rows), np.stack([one[c].to_numpy() for c in one.column_names[3:]], 1))
    assert one.schema.field("p_0").type == "float"  # float32, as computed
    meta = json.loads(one.schema.metadata[b"ssl_train"])
    assert meta["temperature"] == chunked["temperature"] and meta["classes"] == [str(d) for d in range(10)]
    accuracy = np.mean(np.array(one["predicted"].to_pylist(), dtype=int) == digits_test[1].numpy())
    assert accuracy > 0.9


def test_a_run_dir_a_checkpoint_and_every_export_variant(run_dir, digits_ckpt, exported, digits_test, tmp_path):
    np.save(tmp_path / "x.npy", digits_test[0][:120].numpy())
    out, meta = exported

    def run(model, name, **options):
        result = predict(model, tmp_path / "x.npy", tmp_path / f"{name}.parquet", PredictOptions(**options),
                         Trust(everything=name == "pt2"))
        table = pq.read_table(tmp_path / f"{name}.parquet")
        return result, np.stack([table[f"p_{d}"].to_numpy() for d in range(10)], 1)

    results = {"run": run(run_dir, "run"), "best": run(digits_ckpt, "best"), "ts": run(out, "ts"),
               "int8": run(out, "int8", variant="int8"), "pt2": run(out, "pt2", variant="pt2")}
    assert {k: Path(r["model"]["path"]).name for k, (r, _) in results.items()} == {
        "run": "last.ckpt", "best": digits_ckpt.name, "ts": "model.ts", "int8": "model_int8.ts", "pt2": "model.pt2"}
    # The export's profile is the checkpoint's: one temperature for all (int8's fitted for the fp32 weights).
    assert len({r["temperature"]["value"] for r, _ in results.values()}) == 1
    profile = out / "reference_profile.pt"
    assert results["ts"][0]["temperature"]["source"] == f"fitted on the validation split ({profile})"
    assert results["int8"][0]["temperature"]["source"].endswith(", for the fp32 weights")
    labels = digits_test[1][:120].numpy()
    reference = results["best"][1]
    for name, (_, probs) in results.items():
        if name == "int8":  # quantization moves the logits: the same predictions, nearly always
            assert np.mean(probs.argmax(1) == reference.argmax(1)) >= 0.97
        else:
            assert np.abs(probs - reference).max() < 1e-4, name
        assert np.mean(probs.argmax(1) == labels) > 0.9, name


def test_image_arrays_read_like_the_image_files(folder, tmp_path):
    """uint8 N×H×W, N×H×W×1 and N×1×H×W arrays of a folder's pixels, and floats in [0, 1], give its tensors."""
    files = sorted((folder / "test").rglob("*.png"))[:20]
    pixels = np.stack([np.asarray(Image.open(f)) for f in files])  # 20×8×8 uint8
    from_files = torch.cat([x for x, _, _ in Inputs([folder / "test"], (1, 8, 8)).chunks(1000)])[:20]
    arrays = {"nhw": pixels, "nhwc": pixels[..., None], "nchw": pixels[:, None],
              "float": pixels[:, None].astype(np.float32) / np.float32(255)}
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
        x = next(Inputs(tmp_path / f"{name}.npy", (1, 8, 8)).chunks(100))[0]
        assert torch.equal(x, from_files), name


def test_temperature_sources(exported, digits_ckpt, tmp_path):
    out, _ = exported
    bare = tmp_path / "elsewhere" / "model.ts"
    bare.parent.mkdir()
    bare.write_bytes((out / "model.ts").read_bytes())
    model = load_model(out / "model.ts")
    assert model_temperature(model)[1].startswith("fitted on the validation split")
    assert model_temperature(model, 2.0) == (2.0, "predict.temperature")
    folded = LoadedModel(bare, "TorchScript", "x", model.predict, metadata={"export": {"temperature": 1.5}})
    assert model_temperature(folded) == (1.0, "T=1.5 folded into the model at export (metadata.json): its softmax "
                                              "is calibrated")
    unknown = LoadedModel(bare, "TorchScript", "x", model.predict, metadata={"export": {"temperature": None}})
    value, source = model_temperature(unknown)
    assert value == 1.0 and source.startswith("none known") and "T=1" in source
    # A checkpoint away from its run directory has no profile describing it.
    moved = tmp_path / "run" / "checkpoints" / "model.ckpt"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(digits_ckpt.read_bytes())
    assert model_temperature(load_model(moved))[0] == 1.0


def save_png(path: Path, mode: str = "L", size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).convert(mode).save(path)


def bad_case(case: str, tmp: Path, run_dir: Path, exported: tuple[Path, dict]) -> tuple[list[str], str]:
    """(ssl-predict's arguments, text its one-line error must contain) for each way a request can be wrong."""
    inputs, output = tmp / "in", tmp / "out" / "p.csv"
    extra: list[str] = []
    if case == "missing folder":
        message = f"input={inputs}: no such file or directory"
    elif case == "empty folder":
        inputs.mkdir()
        message = "the folder holds no image files"
    elif case == "undecodable image":
        save_png(inputs / "fine.png")
        (inputs / "sub").mkdir()
        (inputs / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        message = f"1 unreadable image file: {inputs / 'sub' / 'broken.png'}"
    elif case == "colour image for a grayscale model":
        save_png(inputs / "rgb.png", mode="RGB")
        message = "not 8×8 with 1 channel as the model takes: "
    elif case == "wrong array shape":
        inputs = tmp / "in.npy"
        np.save(inputs, np.zeros((4, 3, 8, 8), np.float32))
        message = "channel count differs from the model: samples are 3×8×8, the model takes 1×8×8 (C×H×W)"
    elif case == "NaN in the last chunk":
        inputs = tmp / "in.npy"
        x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
        x[37, 0, 2, 2] = np.nan
        np.save(inputs, x)
        extra = ["predict.batch_size=16"]
        message = "non-finite pixel values (NaN or inf), first in sample 37"
    else:
        inputs = tmp / "in.npy"
        np.save(inputs, np.zeros((4, 1, 8, 8), np.float32))
        if case == "wrong output suffix":
            output = tmp / "out" / "p.json"
            message = f"output={output}: expected a .csv or .parquet file"
        elif case == "pt2 without trust":
            run_dir, extra = exported[0], ["variant=pt2"]
            message = "a torch.export program unpickles on load and could run code"
        elif case == "variant of a run directory":
            extra = ["variant=int8"]
            message = "variant=int8 picks a file of an export directory"
        elif case == "parquet without pyarrow":
            output = tmp / "out" / "p.parquet"
            message = "pip install 'ssl_train[parquet]'"
        else:
            raise KeyError(case)
    return [f"model_path={run_dir}", f"input={inputs}", f"output={output}", *extra], message


BAD = ["missing folder", "empty folder", "undecodable image", "colour image for a grayscale model",
       "wrong array shape", "NaN in the last chunk", "wrong output suffix", "pt2 without trust",
       "variant of a run directory", "parquet without pyarrow"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_line_exit_1_and_no_file(case, run_dir, exported, compose_cfg, tmp_path, monkeypatch,
                                                       capsys):
    """What ssl-predict runs for its composed config, through the commands' error handling (run_cli)."""
    args, message = bad_case(case, tmp_path, run_dir, exported)
    if case == "parquet without pyarrow":  # as if the extra were not installed
        for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
            monkeypatch.setitem(sys.modules, name, None)
    (tmp_path / "out").mkdir()
    cfg = compose_cfg("predict", args)
    with pytest.raises(SystemExit) as exit_:
        run_cli(_task, cfg)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert message in err, err
    assert list((tmp_path / "out").iterdir()) == []  # no output, no temporary file
