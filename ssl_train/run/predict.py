"""A model and new images in, one row of calibrated class probabilities per image out: the flow behind `ssl-predict`.

    model_path: a run directory (its tested checkpoint) · a checkpoint · an export directory (model.ts;
                variant=int8: model_int8.ts, variant=pt2: model.pt2) · an exported file
      → LoadedModel (run/artifacts.py) inside `Predictor`, a LightningModule whose predict_step returns
        softmax(logits / T), T the model's fitted temperature (`model_temperature`)
    input: an image folder (recursively) or a .npy/.pt array, checked up front (run/inputs.py)
      → read a chunk at a time (a dataset of chunks) → Trainer.predict(return_predictions=False)
      → `PredictionWriter.write_on_batch_end` appends each chunk to the output (CSV or Parquet) under a
        temporary name, renamed when the last chunk is in (io.write_atomic): a failure leaves no file
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor, nn

from ssl_train.errors import SSLTrainError
from ssl_train.io import write_atomic
from ssl_train.run.artifacts import LoadedModel, load_model, output_classes
from ssl_train.run.inputs import Inputs
from ssl_train.run.profile import PROFILE_FILE, ReferenceProfile, load_profile
from ssl_train.run.safety import Trust

VARIANTS = {"ts": "model.ts", "int8": "model_int8.ts", "pt2": "model.pt2"}  # an export directory's files
FORMATS = (".csv", ".parquet")
PARQUET_HINT = "pip install 'ssl_train[parquet]'"


@dataclass
class PredictOptions:
    """How `ssl-predict` reads, runs and writes (conf/predict/default.yaml).

    Args:
        variant: which file of an export directory: ts (model.ts), int8 (model_int8.ts) or pt2 (model.pt2,
            only with trust_checkpoint=true: torch.export.load unpickles).
        batch_size: images per chunk read and per forward pass (memory is bounded by it).
        temperature: divide the logits by this T; None: the model's own (`model_temperature`).
        resize: decode image files resized and converted to the model's input; None: as the model was trained
            (true for image_folder runs).
        accelerator: where a checkpoint runs (Lightning's; "auto": a GPU when there is one); exported files
            run on the CPU.
        num_workers: DataLoader processes that decode chunks ahead of the model.
        progress: Lightning's progress bar (stderr).
    """

    variant: str = "ts"
    batch_size: int = 256
    temperature: float | None = None
    resize: bool | None = None
    accelerator: str = "auto"
    num_workers: int = 0
    progress: bool = False

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise SSLTrainError(f"variant={self.variant!r}: expected one of {', '.join(VARIANTS)} "
                                f"({', '.join(VARIANTS.values())} of an export directory)")
        for name, low in (("batch_size", 1), ("num_workers", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SSLTrainError(f"predict.{name}={value!r}: expected an integer ≥ {low}")
        if self.temperature is not None and not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise SSLTrainError(f"predict.temperature={self.temperature!r}: expected a positive number (or null)")


class Predictor(L.LightningModule):
    """Any pixels → logits module (a checkpoint's network, TorchScript, a torch.export program) as a LightningModule:
    predict_step returns the calibrated class probabilities softmax(logits / T) of a chunk."""

    def __init__(self, net: nn.Module, temperature: float = 1.0):
        super().__init__()
        if isinstance(net, (torch.jit.ScriptModule, torch.fx.GraphModule)):
            # Exported modules refuse Lightning's train()/eval() (a frozen TorchScript module has no `training`
            # flag, a torch.export program raises): kept outside the module tree, on the CPU they were loaded for.
            object.__setattr__(self, "net", net)
        else:
            self.net = net
        self.temperature = float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def predict_step(self, batch: tuple[Tensor, int, int], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return (self.net(batch[0]).float() / self.temperature).softmax(-1)


class Chunks(torch.utils.data.Dataset):
    """Item i: chunk i of the input (pixels, source index, start), read when asked for."""

    def __init__(self, inputs: Inputs, batch_size: int):
        self.inputs, self.spans = inputs, inputs.spans(batch_size)

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        k, start, stop = self.spans[i]
        return self.inputs.read(k, start, stop), k, start


class Table:
    """The output file, appended a chunk at a time: one row per image, the key column (file or index), the
    predicted class, its probability and every class's probability (float32, as computed)."""

    def __init__(self, path: Path, key: str, classes: list[str], metadata: dict):
        self.path, self.key, self.classes = path, key, classes
        self.columns = [key, "predicted", "confidence", *(f"p_{c}" for c in classes)]
        self.rows = 0
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            self.schema = pa.schema([(key, pa.string() if key == "file" else pa.int64()), ("predicted", pa.string()),
                                     *((c, pa.float32()) for c in self.columns[2:])],
                                    metadata={"ssl_train": json.dumps(metadata)})
            self.writer = pq.ParquetWriter(str(path), self.schema)
        else:
            self.file = open(path, "w", newline="")
            self.writer = csv.writer(self.file)
            self.writer.writerow(self.columns)

    def write(self, names: list, probs: np.ndarray) -> None:
        predicted = probs.argmax(1)
        confidence = probs[np.arange(len(probs)), predicted]
        labels = [self.classes[i] for i in predicted]
        if self.path.suffix == ".parquet":
            import pyarrow as pa

            arrays = [names, labels, confidence, *probs.T]
            self.writer.write_table(pa.Table.from_arrays([pa.array(a, type=f.type) for a, f in
                                                          zip(arrays, self.schema)], schema=self.schema))
        else:  # str() of a float32 is its shortest round-trip decimal
            self.writer.writerows([name, label, str(c), *map(str, row)]
                                  for name, label, c, row in zip(names, labels, confidence, probs))
        self.rows += len(probs)

    def close(self) -> None:
        if self.path.suffix == ".parquet":
            self.writer.close()
        else:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()


class PredictionWriter(BasePredictionWriter):
    """Appends each chunk's probabilities to the table as soon as they are computed (nothing is kept)."""

    def __init__(self, table: Table, inputs: Inputs):
        super().__init__(write_interval="batch")
        self.table, self.inputs = table, inputs

    def write_on_batch_end(self, trainer, pl_module, prediction: Tensor, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        _, k, start = batch
        probs = prediction.detach().float().cpu().numpy()
        self.table.write(self.inputs.sources[k].names(start, start + len(probs)), probs)


def predict(model_path: str | Path, inputs: str | Path, output: str | Path, options: PredictOptions | None = None,
            trust: Trust | None = None) -> dict:
    """Predict every image of `inputs` (a folder or an array) with `model_path` into `output` (.csv or .parquet).

    Returns a summary (what was read and written, the classes, the temperature and where it came from); the
    Parquet file carries it as its schema's `ssl_train` metadata. Every check on the model, the input and the
    output runs before the first image is predicted.
    """
    start = time.perf_counter()
    options = options or PredictOptions()
    if not isinstance(inputs, (str, Path)):
        raise SSLTrainError(f"input={inputs}: expected one folder of images or one .npy/.pt array")
    output = Path(output)
    if output.suffix not in FORMATS:
        raise SSLTrainError(f"output={output}: expected a .csv or .parquet file")
    if output.suffix == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise SSLTrainError(f"output={output}: Parquet output needs pyarrow: {PARQUET_HINT}") from None
    if output.is_dir():
        raise SSLTrainError(f"output={output} is a directory: name the .csv or .parquet file to write")
    model = load_model(model_file(model_path, options.variant), trust)
    shape, classes, resize = model_inputs(model)
    stream = Inputs(str(inputs), shape, resize=resize if options.resize is None else bool(options.resize))
    k = output_classes(model, torch.zeros(2, *shape), shape, f"input={inputs}")
    if k != len(classes):
        raise SSLTrainError(f"{model.path} returns {k} logits but names {len(classes)} classes "
                            f"({', '.join(classes[:12])})")
    temperature, source = model_temperature(model, options.temperature)
    summary = {"model": {"path": str(model.path), "kind": model.kind, "sha256": model.sha256},
               "input": stream.describe()[0], "classes": classes,
               "temperature": {"value": temperature, "source": source}, "options": asdict(options)}
    # Exported files run on the CPU they are deployed on (and int8 kernels exist only there); a checkpoint anywhere.
    accelerator = options.accelerator if model.run is not None else "cpu"
    loader = torch.utils.data.DataLoader(Chunks(stream, options.batch_size), batch_size=None,
                                         num_workers=options.num_workers)
    key = "file" if stream.sources[0].kind == "folder" else "index"

    def save(tmp: Path) -> None:
        table = Table(tmp, key, classes, summary)
        try:
            with quiet_lightning():
                trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                                    enable_model_summary=False, enable_progress_bar=options.progress,
                                    callbacks=[PredictionWriter(table, stream)])
                trainer.predict(Predictor(model.predict, temperature), dataloaders=loader, return_predictions=False)
        except SSLTrainError as exc:
            raise SSLTrainError(worker_message(exc)) from None
        finally:
            table.close()
        summary["rows"] = table.rows

    write_atomic(output, save)
    return {"output": str(output), "format": output.suffix[1:], "key": key, **summary,
            "time_s": time.perf_counter() - start}


def model_file(path: str | Path, variant: str = "ts") -> Path:
    """The model file behind `model_path`: a run directory's tested checkpoint, an export directory's `variant`
    file, or the file itself."""
    path = Path(path)
    if path.is_dir():
        if (path / "metadata.json").is_file() or any((path / name).is_file() for name in VARIANTS.values()):
            file = path / VARIANTS[variant]
            if not file.is_file():
                held = ", ".join(n for n in VARIANTS.values() if (path / n).is_file()) or "none of them"
                raise SSLTrainError(f"model_path={path}: the export directory holds no {file.name} (variant={variant});"
                                    f" it holds {held}")
            return file
        if (path / "checkpoints").is_dir():
            _no_variant(variant, path)
            return tested_checkpoint(path)
        raise SSLTrainError(f"model_path={path}: neither a run directory (checkpoints/) nor an export directory "
                            "(model.ts, metadata.json)")
    if not path.is_file():
        raise SSLTrainError(f"model_path={path}: no such file or directory")
    _no_variant(variant, path)
    return path


def _no_variant(variant: str, path: Path) -> None:
    if variant != "ts":
        raise SSLTrainError(f"variant={variant} picks a file of an export directory; model_path={path} is not one")


def tested_checkpoint(run_dir: Path) -> Path:
    """The checkpoint behind a run's test/* metrics (metrics.json `test/checkpoint`, looked up in RUN/checkpoints
    so that a moved run directory still works); last.ckpt, the final weights, when metrics.json does not say."""
    checkpoints = run_dir / "checkpoints"
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = {}
    tested = metrics.get("test/checkpoint") if isinstance(metrics, dict) else None
    if isinstance(tested, str) and (checkpoints / Path(tested).name).is_file():
        return checkpoints / Path(tested).name
    if (checkpoints / "last.ckpt").is_file():
        return checkpoints / "last.ckpt"
    raise SSLTrainError(f"model_path={run_dir}: the run directory holds no checkpoints/last.ckpt")


def model_inputs(model: LoadedModel) -> tuple[tuple[int, int, int], list[str], bool]:
    """(input C×H×W, class names, whether image files are resized as in training) of a checkpoint or an export."""
    if model.run is not None:
        dataset = model.run.config.get("data", {}).get("dataset", {}).get("_target_", "")
        return model.run.input_shape, [str(c) for c in model.run.classes], str(dataset).endswith("image_folder")
    meta = model.metadata
    try:
        shape = tuple(int(d) for d in meta["input"]["shape"][1:])
        classes = [str(c) for c in meta["classes"]]
    except (TypeError, KeyError, ValueError):
        raise SSLTrainError(f"model_path={model.path}: no readable metadata.json beside it to give the classes and "
                            "input shape (predict from the directory ssl-export wrote)") from None
    if len(shape) != 3:
        raise SSLTrainError(f"{model.path.parent / 'metadata.json'}: input shape {meta['input']['shape']}, "
                            "expected [N, C, H, W]")
    return shape, classes, (meta.get("training") or {}).get("dataset") == "image_folder"


def model_temperature(model: LoadedModel, chosen: float | None = None) -> tuple[float, str]:
    """(T, where it comes from): the T that calibrates softmax(logits / T) for this model file.

    The temperature is ssl-eval's (`ssl_train.calibration.fit_temperature` on the validation split's NLL), as
    the model's reference profile records it beside the checkpoint (RUN/reference_profile.pt) or the export.
    An export with `export.temperature` folded in (metadata.json) is calibrated already; without either, T = 1.
    """
    if chosen is not None:
        return float(chosen), "predict.temperature"
    folded = ((model.metadata or {}).get("export") or {}).get("temperature")
    profile, path = own_profile(model)
    if profile is not None:
        source = f"fitted on the validation split ({path})"
        if folded:
            source += f", on top of T={folded:g} folded into the model at export"
        if model.path.name == VARIANTS["int8"]:
            source += ", for the fp32 weights"
        return float(profile.temperature), source
    if folded:
        return 1.0, f"T={folded:g} folded into the model at export (metadata.json): its softmax is calibrated"
    return 1.0, ("none known (no reference profile describes this model and none was folded in at export): T=1, "
                 "the model's own softmax")


def own_profile(model: LoadedModel) -> tuple[ReferenceProfile | None, Path | None]:
    """The reference profile beside the model, when it describes these weights: a run's (the checkpoint's hash,
    or the final weights at the checkpoint's step) or an export's (the same source checkpoint)."""
    if model.run is not None:
        path = model.run_dir / PROFILE_FILE
    elif model.metadata is not None:
        path = model.path.parent / PROFILE_FILE
    else:
        return None, None
    if not path.is_file():
        return None, None
    profile = load_profile(path)
    source = profile.source
    if model.run is not None:
        final = source.get("checkpoint") is None and source.get("global_step") == model.run.global_step
        same = source.get("sha256") == model.sha256 or final
    else:
        same = source.get("sha256") == (model.metadata.get("source_checkpoint") or {}).get("sha256")
    return (profile, path) if same else (None, None)


@contextmanager
def quiet_lightning():
    """Lightning's device banner and its advice on data loader workers stay out of a command's output."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in ("does not have many workers", "Couldn't infer the batch indices", "LeafSpec"):
                warnings.filterwarnings("ignore", message=f".*{message}")
            yield
    finally:
        logger.setLevel(level)


def worker_message(exc: SSLTrainError) -> str:
    """An error raised in a DataLoader worker comes back as "Caught SSLTrainError in DataLoader worker ..." and
    the traceback: the original message is its last line."""
    text = str(exc).strip()
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    return text.splitlines()[-1].split(": ", 1)[-1]
