"""One model and one data split in; eval.json and report.html out: the flow behind `ssl-eval`.

    model (checkpoint, model.ts, model.pt2) + data (the run's own splits, or data=...)
      → logits on the evaluated split, the validation split, the labeled set and the unlabeled pool
      → metrics · bootstrap CIs · calibration + temperature · slices · robustness · SSL signals · privacy
      → figures → report.html, then eval.json (written last: a directory without it is not a finished evaluation)

Everything is computed in memory before the first file is written, so a
failure leaves nothing half-written.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import roc_auc_score
from torch import Tensor

from ssl_train import calibration
from ssl_train.data.datamodule import SSLDataModule
from ssl_train.data.datasets import FileImages
from ssl_train.data.samples import locate, sample_ids
from ssl_train.data.scenarios import UNSEEN
from ssl_train.errors import SSLTrainError
from ssl_train.evaluation import metrics, plots, privacy, report, robustness, slices, ssl_signals
from ssl_train.io import write_json_atomic, write_text_atomic
from ssl_train.losses import max_softmax_outlier_score
from ssl_train.run import guard
from ssl_train.run.artifacts import LoadedModel, load_model, output_classes
from ssl_train.run.batches import float_batches
from ssl_train.run.data import build_datamodule, dataset_name
from ssl_train.run.safety import Trust

SPLITS = ("test", "val")


@dataclass
class EvalOptions:
    """What `ssl-eval` computes (conf/eval/default.yaml).

    Args:
        split: the evaluated split, "test" or "val". The temperature is always fitted on "val".
        batch_size: images per forward pass.
        bins: confidence bins of ECE, MCE and the reliability diagram.
        bootstrap, level: resamples and coverage of the bootstrap intervals.
        slice_alpha: false discovery rate at which slices are flagged.
        slice_by_subfolder: slice an image folder by the subfolder below each class folder.
        slice_csv, slice_column, slice_file_column: slice by `slice_column` of a CSV mapping files to values.
        robustness: evaluate under corruptions (4 kinds × 3 severities).
        pseudo_threshold: confidence threshold of the pseudo-label distribution; None: the run's
            `algorithm.masking.threshold` (or `algorithm.threshold`), else 0.95 (FixMatch's).
        unlabeled_max: unlabeled images (seeded sample) that the pseudo-label distribution looks at.
        membership: run the membership-inference estimate.
        logs: the training CSV log; None: RUN_DIR/csv/metrics.csv beside a checkpoint.
        seed: bootstrap, corruption noise and unlabeled sample.
    """

    split: str = "test"
    batch_size: int = 512
    bins: int = 15
    bootstrap: int = 1000
    level: float = 0.95
    slice_alpha: float = 0.05
    slice_by_subfolder: bool = False
    slice_csv: str | None = None
    slice_column: str | None = None
    slice_file_column: str = "file"
    robustness: bool = True
    pseudo_threshold: float | None = None
    unlabeled_max: int = 10000
    membership: bool = True
    logs: str | None = None
    seed: int = 0


def evaluate(ckpt_path: str | Path, out_dir: str | Path, options: EvalOptions | None = None,
             data: DictConfig | dict | None = None, trust: Trust | None = None) -> dict:
    """Evaluate `ckpt_path` and write eval.json and report.html into `out_dir`; returns eval.json's content.

    `data` is a data config (conf/data); None uses the checkpoint's own (an exported model needs one).
    `trust` says which code a checkpoint's configs may name beyond ssl_train's own (`ssl_train.run.safety`).
    """
    start = time.perf_counter()
    options = options or EvalOptions()
    if options.split not in SPLITS:
        raise SSLTrainError(f"eval.split={options.split!r}: expected one of {', '.join(SPLITS)}")
    for name in ("batch_size", "bins", "bootstrap"):
        if not isinstance(getattr(options, name), int) or getattr(options, name) < 1:
            raise SSLTrainError(f"eval.{name}={getattr(options, name)!r}: expected a positive integer")
    if not 0 < options.level < 1 or not 0 < options.slice_alpha < 1:
        raise SSLTrainError(f"eval.level={options.level}, eval.slice_alpha={options.slice_alpha}: both lie in (0, 1)")
    if bool(options.slice_csv) != bool(options.slice_column):
        raise SSLTrainError("eval.slice_csv and eval.slice_column go together: the CSV and the column naming slices")
    model = load_model(ckpt_path, trust)
    datamodule, data_name, data_seed = _datamodule(model, data)
    classes = list(datamodule.source.classes)
    warnings = _check_compatibility(model, datamodule, data_name, data_seed)
    scale = datamodule.source.scale
    subset = datamodule.test if options.split == "test" else datamodule.val

    logits, labels = _logits(model, subset, scale, options.batch_size)
    val_logits, val_labels = (logits, labels) if options.split == "val" else _logits(model, datamodule.val, scale,
                                                                                        options.batch_size)
    outliers = _outliers(logits, labels)
    if outliers is not None:  # images of classes nobody labeled (data.open_set): scored above, not below
        known = (labels >= 0).numpy()
        logits, labels, subset = logits[known], labels[known], subset.where(known)
    probs = logits.softmax(-1)
    confidence, preds = probs.max(-1)
    correct = (preds == labels).numpy()

    result = {"format_version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "model": {"path": str(model.path), "kind": model.kind, "sha256": model.sha256},
              "data": {"dataset": data_name, "split": options.split, "seed": data_seed, "classes": classes},
              "options": asdict(options)}
    result["metrics"] = metrics.classification_metrics(probs, labels, classes)
    if outliers is not None:
        result["outliers"] = outliers
    result["bootstrap"] = metrics.bootstrap_ci(labels.numpy(), preds.numpy(), len(classes), options.bootstrap,
                                               options.level, options.seed)
    result["calibration"] = _calibration(model, logits, labels, val_logits, val_labels, options)
    if options.split == "val":
        warnings.append("the temperature is fitted on the evaluated split (val): its ECE after scaling is optimistic")
    if result["calibration"]["ece_scaled"] > result["calibration"]["ece"]:
        warnings.append(f"temperature scaling fitted on val raises the {options.split} ECE "
                        f"({result['calibration']['ece']:.4f} → {result['calibration']['ece_scaled']:.4f}): "
                        "val and the evaluated split are calibrated differently")

    result["slices"] = _slices(correct, confidence.numpy(), [classes[y] for y in labels.tolist()], datamodule,
                               subset, options)
    for kind in ("classes", "user"):
        bad = [s for s in result["slices"].get(kind) or [] if s["flagged"]]
        if bad:
            warnings.append(f"{len(bad)} {'class' if kind == 'classes' else 'user-defined'} slice(s) significantly "
                            "below the rest: " + ", ".join(f"{s['slice']} ({s['acc']:.3f} over {s['samples']})"
                                                           for s in bad))

    if options.robustness:
        batches = list(float_batches(subset, scale, options.batch_size))
        result["robustness"] = robustness.robustness(model.predict, batches, seed=options.seed)

    result["ssl"] = _ssl_signals(model, datamodule, options)
    if (result["ssl"].get("pseudo_labels") or {}).get("amplified"):
        warnings.append(result["ssl"]["pseudo_labels"]["verdict"])

    member_loss = nonmember_loss = None
    if options.membership:
        member_logits, member_labels = _logits(model, datamodule.labeled, scale, options.batch_size)
        member_loss = F.cross_entropy(member_logits, member_labels, reduction="none").numpy()
        nonmember_loss = F.cross_entropy(logits, labels, reduction="none").numpy()
        result["privacy"] = privacy.membership_inference(member_loss, nonmember_loss)
        if result["privacy"]["risk"] != "low":
            warnings.append(result["privacy"]["verdict"])
    run_guard = model.run.guard if model.run is not None else None
    if run_guard is not None:  # measured in training, on the validation split (the guard's own)
        result["guard"] = run_guard
        if not run_guard["guard/ssl_better"]:
            warnings.append(guard.verdict(run_guard))
    result["warnings"] = warnings
    result["time_s"] = time.perf_counter() - start  # before the figures: the model's evaluation time

    figures = _figures(result, member_loss, nonmember_loss)
    result = _finite(result)
    html = report.render_eval_report(result, figures)
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "report.html", html)
    write_json_atomic(out_dir / "eval.json", result)
    return result


def summary_table(result: dict, out_dir: str | Path) -> str:
    """The printed summary: what was evaluated, the headline numbers, where the files are."""
    m, d = result["metrics"], result["data"]
    title = f"{result['model']['path']} on {d['dataset']} {d['split']} ({m['samples']} images)"
    rows = report.summary_rows(result) + [("written", f"{out_dir}/eval.json, {out_dir}/report.html")]
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)] + [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines + [f"warning: {w}" for w in result["warnings"]])


# --- steps -------------------------------------------------------------------------------------------------------


def _datamodule(model: LoadedModel, data: DictConfig | dict | None) -> tuple[SSLDataModule, str, int | None]:
    if data is None or "_target_" not in data:
        if model.run is None:
            raise SSLTrainError(f"ckpt_path={model.path} is an exported model ({model.kind}): name the data to "
                                "evaluate it on, e.g. data=digits or data=image_folder data.dataset.root=ROOT")
        config = model.run.config["data"]
        datamodule = model.run.datamodule()
    else:
        config = OmegaConf.to_container(data, resolve=True) if isinstance(data, DictConfig) else dict(data)
        config.pop("root", None)
        datamodule = build_datamodule(config)
    return datamodule, dataset_name(config), config.get("seed")


def _check_compatibility(model: LoadedModel, datamodule: SSLDataModule, data_name: str,
                         data_seed: int | None) -> list[str]:
    """Class count and input shape must fit (errors); names and training seed should (warnings)."""
    classes = list(datamodule.source.classes)
    sample = datamodule.test[np.arange(min(2, len(datamodule.test)))]["x"].float() * datamodule.source.scale
    k = output_classes(model, sample, datamodule.input_shape, data_name)
    if k != len(classes):
        shown = ", ".join(classes[:12]) + (", …" if len(classes) > 12 else "")
        raise SSLTrainError(f"{model.path} predicts {k} classes but the data ({data_name}) has {len(classes)} "
                            f"({shown}): evaluate a model on the kind of data it was trained for")
    warnings = []
    if model.classes is not None and list(map(str, model.classes)) != classes:
        warnings.append(f"the model's class names {model.classes[:6]}… differ from the data's {classes[:6]}…; "
                        "results assume class i of the model is class i of the data")
    seed = model.training_seed
    if model.run is None and seed is not None and data_seed is not None and seed != data_seed:
        warnings.append(f"the model was trained with seed {seed} but the data splits use seed {data_seed}: the "
                        f"evaluated images may include training images (pass seed={seed})")
    return warnings


def _logits(model: LoadedModel, subset, scale: float, batch_size: int, limit: int | None = None,
            seed: int = 0) -> tuple[Tensor, Tensor]:
    outs, ys = [], []
    with torch.inference_mode():
        for x, y in float_batches(subset, scale, batch_size, limit=limit, seed=seed):
            outs.append(model.predict(x).float())
            ys.append(y)
    if not outs:
        raise SSLTrainError("a split to evaluate is empty")
    return torch.cat(outs), torch.cat(ys).long()


def _outliers(logits: Tensor, labels: Tensor) -> dict | None:
    """Outlier detection on a split that holds images of unseen classes (label UNSEEN): the AUROC of one minus
    the top softmax probability (the maximum-softmax score, which every model has) against the labeled classes'
    images; None when the split has none."""
    unseen = labels == UNSEEN
    if not unseen.any():
        return None
    scored = (labels >= 0) | unseen
    score = max_softmax_outlier_score(logits[scored])
    auroc = float(roc_auc_score(unseen[scored].numpy(), score.numpy()))
    return {"auroc": auroc, "unseen": int(unseen.sum()), "seen": int((labels >= 0).sum()),
            "score": "1 - maximum softmax probability"}


def _calibration(model: LoadedModel, logits: Tensor, labels: Tensor, val_logits: Tensor, val_labels: Tensor,
                 options: EvalOptions) -> dict:
    temperature = calibration.fit_temperature(val_logits, val_labels)
    probs, scaled = logits.softmax(-1), (logits / temperature).softmax(-1)
    before = calibration.calibration_errors(probs, labels, options.bins)
    after = calibration.calibration_errors(scaled, labels, options.bins)

    def bins(p: Tensor) -> list[dict]:
        return calibration.reliability_bins(p.max(-1).values.numpy(), (p.argmax(-1) == labels).numpy(), options.bins)

    hint = (f"ssl-export ckpt_path={model.path} export.temperature={temperature:.4f}"
            if model.run is not None else None)
    return {"bins": options.bins, "ece": before["ece"], "mce": before["mce"], "nll": calibration.nll(logits, labels),
            "temperature": temperature, "fitted_on": "val", "fitted_samples": len(val_labels),
            "ece_scaled": after["ece"], "mce_scaled": after["mce"],
            "nll_scaled": calibration.nll(logits, labels, temperature),
            "reliability": bins(probs), "reliability_scaled": bins(scaled), "export_hint": hint}


def _slices(correct: np.ndarray, confidence: np.ndarray, class_names: list[str], datamodule: SSLDataModule, subset,
            options: EvalOptions) -> dict:
    out = {"alpha": options.slice_alpha,
           "classes": slices.slice_accuracy(correct, class_names, options.slice_alpha),
           "confidence": slices.confidence_buckets(confidence, correct)}
    user = _user_slices(datamodule, subset, options)
    if user is not None:
        out["user_source"], names = user
        out["user"] = slices.slice_accuracy(correct, names, options.slice_alpha)
    return out


def _user_slices(datamodule: SSLDataModule, subset, options: EvalOptions) -> tuple[str, list[str]] | None:
    if options.slice_by_subfolder:
        pieces = locate(datamodule, subset)
        if not all(isinstance(source, FileImages) for _, source, _ in pieces):
            raise SSLTrainError("eval.slice_by_subfolder=true needs image files (data=image_folder)")
        paths = [source.paths[i] for _, source, idx in pieces for i in idx]
        names = [datamodule.source.classes[y] for y in subset.labels]
        return "subfolder below the class folder", slices.subfolder_slices(paths, names)
    if options.slice_csv:
        ids = sample_ids(datamodule, subset)
        root = _data_root(datamodule)
        return (f"column {options.slice_column!r} of {options.slice_csv}",
                slices.csv_slices(ids, options.slice_csv, options.slice_column, options.slice_file_column, root))
    return None


def _data_root(datamodule: SSLDataModule) -> str | None:
    return getattr(datamodule.dataset_fn, "keywords", {}).get("root")


def _ssl_signals(model: LoadedModel, datamodule: SSLDataModule, options: EvalOptions) -> dict:
    out: dict = {}
    logs = Path(options.logs) if options.logs else (model.run_dir / "csv" / "metrics.csv" if model.run_dir else None)
    curves = ssl_signals.training_curves(logs) if logs is not None else None
    if curves:
        out["training_curves"] = {name: ssl_signals.summarize_curve(c) for name, c in curves.items()}
        out["training_curves_raw"] = curves
        out["training_log"] = str(logs)
    elif logs is None:
        out["training_curves_note"] = ("An exported model carries no training logs; pass "
                                       "eval.logs=RUN_DIR/csv/metrics.csv to plot its mask ratio and pseudo-label "
                                       "accuracy.")
    else:
        out["training_curves_note"] = (f"No mask ratio or pseudo-label accuracy in {logs}: the run did not "
                                       "pseudo-label (a supervised run), or its logs are gone.")
    if len(datamodule.unlabeled):
        threshold = options.pseudo_threshold
        if threshold is None:
            algorithm = (model.run.config.get("algorithm") or {}) if model.run else {}
            threshold = float((algorithm.get("masking") or algorithm).get("threshold", 0.95))
        ulb_logits, truth = _logits(model, datamodule.unlabeled, datamodule.source.scale, options.batch_size,
                                    limit=min(options.unlabeled_max, len(datamodule.unlabeled)), seed=options.seed)
        out["pseudo_labels"] = ssl_signals.pseudo_label_distribution(
            ulb_logits.softmax(-1).numpy(), datamodule.labeled.labels, list(datamodule.source.classes), threshold,
            truth.numpy())
    return out


def _figures(result: dict, member_loss, nonmember_loss) -> dict[str, bytes]:
    cal, classes = result["calibration"], result["data"]["classes"]
    figures = {
        "confusion_matrix": plots.confusion_matrix(result["metrics"]["confusion_matrix"], classes),
        "reliability": plots.reliability(cal["reliability"], cal["reliability_scaled"],
                                         (cal["ece"], cal["ece_scaled"]), cal["temperature"]),
    }
    if result.get("robustness"):
        figures["robustness"] = plots.robustness(result["robustness"], result["metrics"]["acc"])
    ssl = result["ssl"]
    if ssl.get("training_curves_raw"):
        figures["training_curves"] = plots.training_curves(ssl["training_curves_raw"])
    if ssl.get("pseudo_labels"):
        pl = ssl["pseudo_labels"]
        series = {"labeled prior": pl["labeled_share"], f"pseudo-labels (≥ {pl['threshold']:g})": pl["pseudo_share"]}
        if "true_share" in pl:
            series["unlabeled truth"] = pl["true_share"]
        figures["pseudo_labels"] = plots.class_shares(classes, series, "Class shares: labeled vs pseudo-labels")
    if member_loss is not None:
        figures["membership"] = plots.membership(member_loss, nonmember_loss, result["privacy"]["auc"])
    return figures


def _finite(obj):
    """eval.json is strict JSON: infinities and NaNs become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
