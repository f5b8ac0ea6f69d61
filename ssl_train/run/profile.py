"""The reference profile: what a model's inputs and outputs looked like on held-out data when it was trained.

Built on the validation split (held out from training, labeled) of the evaluated weights:

  embeddings      a bounded, seeded sample of penultimate-layer embeddings, PCA-reduced when wide (the
                  residual norm off the kept components is kept too)
  predictions     temperature-calibrated max-softmax confidences, their histogram and equal-mass PSI bins,
                  the predicted-class counts
  labels          the confusion matrix, accuracy and class priors (what label-shift estimation inverts)
  inputs          per-channel pixel mean and standard deviation

`reference_profile.pt` also carries the network (config and weights), so `ssl-monitor` needs nothing
else; it is read with `torch.load(weights_only=True)`. `reference_profile.json` is the readable summary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ssl_train.calibration import expected_calibration_error, fit_temperature
from ssl_train.errors import SSLTrainError, first_line
from ssl_train.io import write_atomic, write_json_atomic
from ssl_train.models.classifier import Classifier
from ssl_train.run.batches import float_batches
from ssl_train.run.checkpoint import build_network, load_run
from ssl_train.run.safety import Trust

log = logging.getLogger(__name__)

PROFILE_FILE = "reference_profile.pt"
SUMMARY_FILE = "reference_profile.json"
FORMAT = "ssl_train.reference_profile"
VERSION = 1


@dataclass
class ProfileOptions:
    """How a reference profile is built (conf/callbacks/default.yaml `reference_profile`, conf/export).

    Args:
        split: the held-out split it describes ("val"; "test" is possible but then no longer unseen by reports).
        max_eval_samples: images evaluated (seeded sample): confusion matrix, calibration, confidences.
        max_samples: embeddings kept for the two-sample tests (seeded sample of those).
        pca_components: embeddings wider than this are reduced to this many principal components.
        psi_bins: equal-mass confidence bins for PSI; histogram_bins: equal-width bins for display.
        batch_size: images per forward pass. seed: picks the samples.
    """

    split: str = "val"
    max_eval_samples: int = 10000
    max_samples: int = 1000
    pca_components: int = 16
    psi_bins: int = 10
    histogram_bins: int = 20
    batch_size: int = 256
    seed: int = 0


@dataclass
class ReferenceProfile:
    model: dict  # config, classes, input_shape, mean, std, state_dict: enough to rebuild the network
    source: dict  # where the weights and the data came from
    samples: int  # images evaluated
    feature_dim: int
    embeddings: Tensor  # n×k reduced embeddings (k = feature_dim when not reduced)
    residuals: Tensor  # n, norm of the part off the kept components
    pca_mean: Tensor
    pca_basis: Tensor  # feature_dim×k
    pca_explained: Tensor  # k, share of the variance of each kept component
    temperature: float
    confidences: Tensor  # samples, calibrated max-softmax
    psi_edges: Tensor
    psi_counts: Tensor
    histogram_counts: Tensor  # equal-width bins on [0, 1]
    predicted_counts: Tensor  # K
    confusion: Tensor  # K×K, rows true class, columns predicted
    accuracy: float
    expected_accuracy: float  # mean calibrated confidence (what CBPE says on the reference itself)
    ece: float  # before calibration
    ece_calibrated: float
    channel_mean: list[float]
    channel_std: list[float]
    resize_images: bool  # the run read image files resized to its input size: do the same for folders
    pca_fit_on: str = "none"  # "other split", "reference" (residuals biased low: not tested) or "none" (no PCA)
    options: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.model["classes"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.model["input_shape"])

    @property
    def class_priors(self) -> np.ndarray:
        counts = self.confusion.sum(1).double().numpy()
        return counts / max(counts.sum(), 1)

    def network(self, source: str | Path = "reference profile", trust: Trust | None = None) -> Classifier:
        m = self.model
        return build_network(m["config"], m["classes"], m["input_shape"], m["mean"], m["std"], m["state_dict"],
                             source, trust)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, data: dict) -> ReferenceProfile:
        return cls(**{k: v for k, v in data.items() if k not in ("format", "version")})

    def summary(self) -> dict:
        """Everything but the samples and weights, as plain JSON."""
        edges = np.linspace(0, 1, len(self.histogram_counts) + 1)
        return {
            "format": FORMAT, "version": VERSION, "source": self.source, "classes": self.classes,
            "input_shape": list(self.input_shape), "samples": self.samples,
            "accuracy": self.accuracy, "expected_accuracy": self.expected_accuracy,
            "calibration": {"temperature": self.temperature, "ece": self.ece, "ece_calibrated": self.ece_calibrated},
            "confusion_matrix": self.confusion.tolist(),
            "class_priors": dict(zip(self.classes, self.class_priors.round(6).tolist())),
            "predicted_class_distribution": dict(zip(self.classes, _share(self.predicted_counts))),
            "confidence_histogram": {"edges": edges.round(6).tolist(), "counts": self.histogram_counts.tolist()},
            "psi_bins": {"edges": self.psi_edges.tolist(), "counts": self.psi_counts.tolist()},
            "embeddings": {"samples": len(self.embeddings), "feature_dim": self.feature_dim,
                           "components": int(self.embeddings.shape[1]),
                           "explained_variance": float(self.pca_explained.sum()), "pca_fit_on": self.pca_fit_on},
            "input_channels": {"mean": self.channel_mean, "std": self.channel_std},
            "resize_images": self.resize_images, "options": self.options,
        }


def _share(counts: Tensor) -> list[float]:
    c = counts.double()
    return (c / c.sum().clamp_min(1)).round(decimals=6).tolist()


def model_spec(network: Classifier, config: dict, classes: list[str], input_shape, mean, std) -> dict:
    return {"config": config["model"], "classes": list(classes), "input_shape": list(input_shape),
            "mean": list(mean), "std": list(std),
            "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}}


@torch.inference_mode()
def forward_outputs(network: Classifier, x: Tensor) -> tuple[Tensor, Tensor]:
    """(penultimate embedding, logits) in one pass: the backbones compute logits as head(features)."""
    features = network.features(x)
    return features, network.backbone.head(features)


def build_profile(network: Classifier, batches: Iterable[tuple[Tensor, Tensor]], spec: dict, source: dict,
                  options: ProfileOptions | None = None, resize_images: bool = False,
                  basis_batches: Iterable[Tensor] | None = None) -> ReferenceProfile:
    """Profile `network` (pixels in [0, 1] → logits) on labeled held-out `batches` of (x, y).

    The PCA basis is fitted on `basis_batches` (images of another split: the unlabeled pool) when given.
    Fitted on the reference sample itself it would hug that sample: its residuals would be smaller than any
    new sample's, a false alarm built in, so the residual is then left out of the tests.
    """
    options = options or ProfileOptions()
    device = next(network.parameters()).device
    feats, logits, labels = [], [], []
    sums = sq = None
    pixels = 0
    checked = False
    for x, y in batches:
        x = x.to(device, torch.float32)
        f, z = forward_outputs(network, x)
        if not checked:  # a backbone whose forward is not head(features) would profile another model
            with torch.inference_mode():
                if not torch.allclose(z, network(x), atol=1e-4, rtol=1e-4):
                    raise SSLTrainError("the model's forward is not head(features(x)): cannot profile its embeddings")
            checked = True
        feats.append(f.float().cpu())
        logits.append(z.float().cpu())
        labels.append(torch.as_tensor(y).cpu())
        xd = x.double()
        s, q = xd.sum((0, 2, 3)).cpu(), xd.square().sum((0, 2, 3)).cpu()
        sums, sq = (s, q) if sums is None else (sums + s, sq + q)
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
    if not feats:
        raise SSLTrainError(f"the {options.split} split is empty: no reference profile")
    feats, logits, labels = torch.cat(feats), torch.cat(logits), torch.cat(labels).long()
    num_classes = len(spec["classes"])

    temperature = fit_temperature(logits.numpy(), labels.numpy())
    probs = (logits.double() / temperature).softmax(1)
    confidence, predicted = probs.max(1)
    raw_confidence = logits.double().softmax(1).max(1).values
    correct = (predicted == labels).numpy()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)

    keep = np.random.default_rng(options.seed).permutation(len(feats))[:options.max_samples]
    sample = feats[torch.as_tensor(np.sort(keep))]
    pca_fit_on = "none"
    if sample.shape[1] > options.pca_components:
        fit = sample
        pca_fit_on = "reference"
        if basis_batches is not None:
            pool = [forward_outputs(network, x.to(device, torch.float32))[0].float().cpu() for x in basis_batches]
            if pool and sum(len(p) for p in pool) > options.pca_components:
                fit, pca_fit_on = torch.cat(pool), "other split"
        mean, basis, explained = fit_pca(fit, options.pca_components)
    else:
        mean, basis = torch.zeros(sample.shape[1]), torch.eye(sample.shape[1])
        explained = torch.ones(sample.shape[1]) / sample.shape[1]
    embeddings, residuals = project(sample, mean, basis)

    conf = confidence.numpy()
    edges = quantile_edges(conf, options.psi_bins)
    mean_px = sums / pixels
    std_px = (sq / pixels - mean_px.square()).clamp_min(0).sqrt()
    return ReferenceProfile(
        model=spec, source={**source, "split": options.split, "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
        samples=len(labels), feature_dim=int(feats.shape[1]), embeddings=embeddings, residuals=residuals,
        pca_mean=mean, pca_basis=basis, pca_explained=explained, temperature=temperature,
        confidences=confidence.float(), psi_edges=torch.as_tensor(edges), psi_counts=torch.as_tensor(
            bin_counts(conf, edges)), histogram_counts=histogram(confidence, options.histogram_bins),
        predicted_counts=torch.bincount(predicted, minlength=num_classes), confusion=confusion,
        accuracy=float(correct.mean()), expected_accuracy=float(conf.mean()),
        ece=expected_calibration_error(raw_confidence.numpy(), correct),
        ece_calibrated=expected_calibration_error(conf, correct),
        channel_mean=mean_px.tolist(), channel_std=std_px.tolist(), resize_images=resize_images,
        pca_fit_on=pca_fit_on, options=asdict(options))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Interior bin edges at the reference quantiles (equal-mass bins; repeated edges merged)."""
    edges = np.quantile(np.asarray(reference, dtype=float), np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(edges)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of `values` in the len(edges)+1 bins (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def fit_pca(x: Tensor, components: int) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, basis d×k, explained variance ratio) of the top-k principal components, by an exact SVD."""
    x = x.double()
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    k = min(components, vh.shape[0])
    variance = s.square()
    ratio = variance[:k] / variance.sum().clamp_min(1e-12)
    return mean.float(), vh[:k].T.float().contiguous(), ratio.float()


def project(x: Tensor, mean: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """(PCA scores, norm of the residual off the kept subspace): the residual catches shift the top
    components do not span (new activation directions under noise, for instance)."""
    centered = x.float() - mean
    scores = centered @ basis
    residual = (centered - scores @ basis.T).norm(dim=1)
    return scores, residual


def histogram(values: Tensor, bins: int) -> Tensor:
    """Counts in `bins` equal-width bins on [0, 1] (1.0 falls in the last)."""
    index = (values.double() * bins).long().clamp(0, bins - 1)
    return torch.bincount(index, minlength=bins)


def profile_run(network: Classifier, datamodule, config: dict, classes: list[str], input_shape, mean, std,
                source: dict, options: ProfileOptions | None = None) -> ReferenceProfile:
    """Profile a trained network on its run's held-out split (the data module is set up)."""
    options = options or ProfileOptions()
    subset = getattr(datamodule, options.split, None)
    if subset is None or options.split not in ("val", "test"):
        raise SSLTrainError(f"profile split {options.split!r}: expected 'val' or 'test'")
    scale = datamodule.source.scale
    limit = options.max_eval_samples if len(subset) > options.max_eval_samples else None
    batches = float_batches(subset, scale, options.batch_size, limit=limit, seed=options.seed)
    pool = datamodule.unlabeled if len(datamodule.unlabeled) else datamodule.labeled
    basis = (x for x, _ in float_batches(pool, scale, options.batch_size, limit=options.max_samples,
                                         seed=options.seed))
    resize = str(config.get("data", {}).get("dataset", {}).get("_target_", "")).endswith("image_folder")
    return build_profile(network, batches, model_spec(network, config, classes, input_shape, mean, std), source,
                         options, resize_images=resize, basis_batches=basis)


def profile_checkpoint(path: str | Path, options: ProfileOptions | None = None, datamodule=None,
                       option: str = "reference", device: torch.device | str | None = None,
                       trust: Trust | None = None) -> ReferenceProfile:
    """The profile of a checkpoint's evaluated weights, on its run's held-out split (rebuilt unless given)."""
    run = load_run(path, option, trust)
    if device is not None:
        run.network.to(device)
    datamodule = datamodule if datamodule is not None else run.datamodule()
    source = {"checkpoint": str(Path(run.path).resolve()), "sha256": run.sha256, "global_step": run.global_step,
              "weights": run.weights}
    return profile_run(run.network, datamodule, run.config, run.classes, run.input_shape, run.mean, run.std, source,
                       options)


def save_profile(profile: ReferenceProfile, directory: str | Path) -> Path:
    """Write reference_profile.pt and its JSON summary into `directory`, each atomically."""
    directory = Path(directory)
    path = write_atomic(directory / PROFILE_FILE, lambda tmp: torch.save(profile.to_dict(), tmp))
    write_json_atomic(directory / SUMMARY_FILE, profile.summary())
    return path


def load_profile(path: str | Path) -> ReferenceProfile:
    """Read a reference_profile.pt; anything else is an SSLTrainError naming the file."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and EOF errors all mean "not a profile"
        raise SSLTrainError(f"{path} is not a reference profile: torch.load failed ({first_line(exc)})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SSLTrainError(f"{path} is not a reference profile (written by ssl-train or ssl-export)")
    if data.get("version") != VERSION:
        raise SSLTrainError(f"{path}: reference profile version {data.get('version')}, this ssl_train reads {VERSION}")
    try:
        return ReferenceProfile.from_dict(data)
    except TypeError as exc:
        raise SSLTrainError(f"{path}: malformed reference profile ({first_line(exc)})") from None


def resolve_reference(path: str | Path, options: ProfileOptions | None = None,
                      trust: Trust | None = None) -> tuple[ReferenceProfile, str, bool]:
    """(profile, where it came from, whether it was built now) for a profile, a checkpoint, or a directory.

    A run or export directory without a profile (made before profiles existed) gets one built from its best
    checkpoint (or, for an export, the checkpoint its metadata.json names): slower, but the same numbers.
    """
    path = Path(path)
    if path.is_dir():
        if (path / PROFILE_FILE).is_file():
            return load_profile(path / PROFILE_FILE), str(path / PROFILE_FILE), False
        checkpoint = _checkpoint_in(path)
        if checkpoint is None:
            raise SSLTrainError(f"reference={path}: the directory holds no {PROFILE_FILE} and no checkpoint "
                                f"(checkpoints/best-*.ckpt or an export's metadata.json) to build one from")
        log.info("no %s in %s: building one from %s", PROFILE_FILE, path, checkpoint)
        return profile_checkpoint(checkpoint, options, trust=trust), str(checkpoint), True
    if not path.is_file():
        raise SSLTrainError(f"reference={path}: no such file or directory")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SSLTrainError(f"reference={path} is neither a reference profile nor a checkpoint: torch.load failed "
                            f"({first_line(exc)})") from None
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return load_profile(path), str(path), False
    if isinstance(data, dict) and "ssl_train" in data:
        return profile_checkpoint(path, options, trust=trust), str(path), True
    raise SSLTrainError(f"reference={path} is neither a reference profile nor an ssl-train checkpoint")


def _checkpoint_in(directory: Path) -> Path | None:
    best = sorted((directory / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    metadata = directory / "metadata.json"
    if metadata.is_file():
        import json

        try:
            ckpt = Path(json.loads(metadata.read_text())["source_checkpoint"]["path"])
        except (ValueError, KeyError, TypeError):
            return None
        return ckpt if ckpt.is_file() else None
    return None

