"""The drift decision: new inputs against a reference profile, streamed in chunks, per window and overall.

Four tests, each with a p-value, make one family:

  embedding_mmd      Gaussian-kernel MMD² on the (PCA-reduced) penultimate embeddings, permutation test
  embedding_ks       Kolmogorov-Smirnov per component (+ the PCA residual norm), Benjamini-Hochberg FDR
  confidence_psi     PSI of the calibrated confidences over the reference's equal-mass bins
  predicted_classes  chi-squared homogeneity of the predicted-class counts

`drift` is true when any test's p-value is at most alpha / 4 (Bonferroni), so the overall false-alarm
rate on unshifted data stays at most alpha whatever the tests' dependence. Beside the decision: new class
priors by black-box shift estimation, the expected accuracy from calibrated confidences (CBPE; moved to the
estimated priors when the class test fires) and its drop against validation, and `retrain_recommended`
when the drop or the drift severity passes the configured thresholds.

Memory is bounded whatever the input size: counts, sums and histograms are exact running totals, and the
embeddings and probabilities the tests need are a uniform sample (bottom-k of random keys) of at most
`reservoir` samples, exact for windows no larger than that.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from ssl_train.errors import SSLTrainError
from ssl_train.monitor import statistics as S
from ssl_train.monitor.inputs import Inputs
from ssl_train.run.profile import ReferenceProfile, bin_counts, forward_outputs, histogram, project
from ssl_train.run.safety import Trust

TESTS = ("embedding_mmd", "embedding_ks", "confidence_psi", "predicted_classes")


@dataclass
class MonitorOptions:
    """The knobs of `ssl-monitor` (conf/monitor/default.yaml).

    Args:
        alpha: false-alarm rate of the overall decision on unshifted data (Bonferroni over the tests).
        permutations: permutations of the MMD test (p-values resolve to 1 / (1 + permutations)).
        mmd_samples: samples per side in the MMD test (its cost grows with the square).
        reservoir: embeddings and probabilities kept per window for the tests (uniform sample).
        batch_size: images per forward pass and per chunk read.
        window, stride: sliding-window mode: windows of `window` consecutive samples every `stride`
            (default: `window`); None monitors the input as a whole (and each path as a window when
            several are given).
        max_accuracy_drop: retrain when the estimated accuracy is this far below validation accuracy.
        max_psi: retrain when drift is detected and the confidence PSI reaches this ("significant": 0.25).
        min_severity: retrain when drift is detected by at least this share of the tests.
        resize: decode image folders resized to the reference's input size; None: as the run was trained
            (true for image_folder runs).
        seed: the permutations and samples.
    """

    alpha: float = 0.05
    permutations: int = 1000
    mmd_samples: int = 500
    reservoir: int = 5000
    batch_size: int = 512
    window: int | None = None
    stride: int | None = None
    max_accuracy_drop: float = 0.05
    max_psi: float = 0.25
    min_severity: float = 0.75
    resize: bool | None = None
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise SSLTrainError(f"monitor.alpha={self.alpha}: expected a value in (0, 1)")
        for name in ("permutations", "mmd_samples", "reservoir", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (2 if name in ("mmd_samples", "reservoir") else 1):
                raise SSLTrainError(f"monitor.{name}={value!r}: expected a positive integer")
        if self.window is not None and (not isinstance(self.window, int) or self.window < 2):
            raise SSLTrainError(f"monitor.window={self.window!r}: expected an integer of at least 2 (or null)")
        if self.stride is not None and (not isinstance(self.stride, int) or self.stride < 1):
            raise SSLTrainError(f"monitor.stride={self.stride!r}: expected a positive integer (or null)")
        if self.stride is not None and self.window is None:
            raise SSLTrainError("monitor.stride needs monitor.window")


@dataclass
class Outputs:
    """Per-sample quantities of one chunk."""

    keys: np.ndarray  # random keys of the bottom-k sample
    embeddings: Tensor  # reduced embeddings
    residuals: Tensor
    probs: Tensor  # calibrated
    confidence: Tensor
    predicted: Tensor
    channel_sum: Tensor  # N×C sums over pixels
    channel_sq: Tensor

    def __len__(self) -> int:
        return len(self.keys)

    def slice(self, lo: int, hi: int) -> Outputs:
        return Outputs(**{k: v[lo:hi] for k, v in self.__dict__.items()})


class WindowStats:
    """Running totals of one window plus its bounded uniform sample of embeddings and probabilities."""

    def __init__(self, profile: ReferenceProfile, reservoir: int, pixels_per_sample: int):
        k = len(profile.classes)
        self.n = 0
        self.reservoir, self.pixels_per_sample = reservoir, pixels_per_sample
        self.channel_sum = torch.zeros(profile.input_shape[0], dtype=torch.float64)
        self.channel_sq = torch.zeros_like(self.channel_sum)
        self.predicted_counts = torch.zeros(k, dtype=torch.long)
        self.psi_edges = profile.psi_edges.numpy()
        self.psi_counts = np.zeros(len(self.psi_edges) + 1, dtype=np.int64)
        self.histogram_counts = torch.zeros(len(profile.histogram_counts), dtype=torch.long)
        self.confidence_sum = 0.0
        self.sample: Outputs | None = None

    def add(self, out: Outputs) -> None:
        if not len(out):
            return
        self.n += len(out)
        self.channel_sum += out.channel_sum.sum(0)
        self.channel_sq += out.channel_sq.sum(0)
        self.predicted_counts += torch.bincount(out.predicted, minlength=len(self.predicted_counts))
        conf = out.confidence.numpy()
        self.psi_counts += bin_counts(conf, self.psi_edges)
        self.histogram_counts += histogram(out.confidence, len(self.histogram_counts))
        self.confidence_sum += float(out.confidence.double().sum())
        merged = out if self.sample is None else Outputs(
            **{k: (np.concatenate if k == "keys" else torch.cat)([getattr(self.sample, k), v])
               for k, v in out.__dict__.items()})
        order = np.argsort(merged.keys, kind="stable")[:self.reservoir]
        index = torch.as_tensor(order)
        self.sample = Outputs(**{k: v[order] if k == "keys" else v[index] for k, v in merged.__dict__.items()})


class Monitor:
    """A reference profile's network and statistics, ready to judge windows of new inputs."""

    def __init__(self, profile: ReferenceProfile, options: MonitorOptions | None = None,
                 source: str = "reference profile", trust: Trust | None = None):
        self.profile, self.options = profile, options or MonitorOptions()
        self.network = profile.network(source, trust).eval()
        self.level = S.bonferroni(self.options.alpha, len(TESTS))
        # The PCA residual is a test column only when the basis was fitted on another split (see profile.py).
        self.use_residual = profile.pca_fit_on == "other split"
        self.ref_ks = self._ks_columns(profile.embeddings, profile.residuals)
        pick = np.random.default_rng(self.options.seed).permutation(len(profile.embeddings))[:self.options.mmd_samples]
        self.ref_mmd = profile.embeddings[torch.as_tensor(np.sort(pick))]
        self.component_names = [f"pc{i + 1}" if profile.pca_fit_on != "none" else f"f{i + 1}"
                                for i in range(profile.embeddings.shape[1])] + ["residual"] * self.use_residual
        self._keys = np.random.default_rng(self.options.seed)
        _, h, w = profile.input_shape
        self.pixels_per_sample = h * w

    def _ks_columns(self, embeddings: Tensor, residuals: Tensor) -> np.ndarray:
        columns = [embeddings, residuals[:, None]] if self.use_residual else [embeddings]
        return torch.cat(columns, dim=1).numpy().astype(np.float64)

    # --- per chunk ----------------------------------------------------------------------------------------------------
    def outputs(self, x: Tensor) -> Outputs:
        if tuple(x.shape[1:]) != self.profile.input_shape:
            raise SSLTrainError(f"input samples are {'×'.join(map(str, x.shape[1:]))}, the reference model takes "
                                f"{'×'.join(map(str, self.profile.input_shape))} (C×H×W)")
        features, logits = forward_outputs(self.network, x.float())
        probs = (logits.double() / self.profile.temperature).softmax(1)
        confidence, predicted = probs.max(1)
        embeddings, residuals = project(features.float(), self.profile.pca_mean, self.profile.pca_basis)
        xd = x.double()
        return Outputs(keys=self._keys.random(len(x)), embeddings=embeddings, residuals=residuals, probs=probs,
                       confidence=confidence, predicted=predicted, channel_sum=xd.sum((2, 3)),
                       channel_sq=xd.square().sum((2, 3)))

    def new_window(self) -> WindowStats:
        return WindowStats(self.profile, self.options.reservoir, self.pixels_per_sample)

    # --- the decision -------------------------------------------------------------------------------------------------
    def check(self, x: Tensor, index: int = 0) -> tuple[dict, dict]:
        """Judge one in-memory window (N×C×H×W pixels in [0, 1]): (result, plot data)."""
        stats = self.new_window()
        for start in range(0, len(x), self.options.batch_size):
            stats.add(self.outputs(x[start:start + self.options.batch_size]))
        return self.decide(stats, index)

    def decide(self, stats: WindowStats, index: int = 0) -> tuple[dict, dict]:
        """The drift tests, estimates and recommendation for one window's statistics."""
        if stats.n < 2:
            raise SSLTrainError(f"a window holds {stats.n} sample{'s' if stats.n != 1 else ''}: the drift tests "
                                f"need at least 2")
        profile, opts, level = self.profile, self.options, self.level
        sample = stats.sample
        generator = torch.Generator().manual_seed(opts.seed * 1_000_003 + index)

        mmd = S.mmd_permutation_test(self.ref_mmd, sample.embeddings[:opts.mmd_samples], opts.permutations,
                                     generator=generator)
        new_ks = self._ks_columns(sample.embeddings, sample.residuals)
        ks = S.ks_fdr(self.ref_ks, new_ks)
        psi, psi_p = S.psi_test(profile.psi_counts.numpy(), stats.psi_counts)
        chi2, chi2_p, dof = S.class_shift_test(profile.predicted_counts.numpy(), stats.predicted_counts.numpy())

        tests = {
            "embedding_mmd": {"p_value": mmd.p_value, "statistic": mmd.statistic, "bandwidth": mmd.bandwidth,
                              "permutations": mmd.permutations,
                              "samples": [len(self.ref_mmd), min(len(sample), opts.mmd_samples)]},
            "embedding_ks": {"p_value": ks.p_value, "max_statistic": float(ks.statistics.max()),
                             "components": len(ks.p_values),
                             "components_drifting": int((ks.adjusted <= level).sum()),
                             "per_component": [{"name": name, "statistic": float(s), "p_value": float(p),
                                                "p_adjusted": float(a)}
                                               for name, s, p, a in zip(self.component_names, ks.statistics,
                                                                        ks.p_values, ks.adjusted)],
                             "samples": [len(self.ref_ks), len(new_ks)]},
            "confidence_psi": {"p_value": psi_p, "psi": psi, "band": S.psi_band(psi), "bins": len(stats.psi_counts)},
            "predicted_classes": {"p_value": chi2_p, "statistic": chi2, "dof": dof},
        }
        for result in tests.values():
            result["drift"] = bool(result["p_value"] <= level)
            result["threshold"] = level
        drifting = [name for name in TESTS if tests[name]["drift"]]
        drift = bool(drifting)

        priors, weights = S.bbse_priors(profile.confusion.numpy(), stats.predicted_counts.numpy())
        unadjusted = stats.confidence_sum / stats.n
        adjust = tests["predicted_classes"]["drift"]
        estimated = S.expected_accuracy(sample.probs.numpy(), weights) if adjust else unadjusted
        drop = profile.accuracy - estimated
        severity = len(drifting) / len(TESTS)

        reasons = []
        if drop >= opts.max_accuracy_drop:
            reasons.append(f"estimated accuracy {100 * drop:.1f} points below validation "
                           f"(threshold {100 * opts.max_accuracy_drop:g})")
        if drift and severity >= opts.min_severity:
            reasons.append(f"{len(drifting)} of {len(TESTS)} tests detect drift")
        if drift and psi >= opts.max_psi:
            reasons.append(f"confidence PSI {psi:.2f} ≥ {opts.max_psi:g}")

        pixels = stats.n * stats.pixels_per_sample
        channel_mean = stats.channel_sum / pixels
        channel_std = (stats.channel_sq / pixels - channel_mean.square()).clamp_min(0).sqrt()
        ref_mean, ref_std = torch.tensor(profile.channel_mean), torch.tensor(profile.channel_std)
        classes = profile.classes
        result = {
            "samples": stats.n,
            "drift": drift,
            "drifting_tests": drifting,
            "severity": severity,
            "tests": tests,
            "estimated_accuracy": estimated,
            "performance": {"estimated_accuracy": estimated, "validation_accuracy": profile.accuracy,
                            "accuracy_drop": drop, "mean_calibrated_confidence": unadjusted,
                            "prior_adjusted": bool(adjust), "method": "CBPE (temperature-calibrated confidences)"},
            "class_priors": {"method": "BBSE", "estimated": dict(zip(classes, np.round(priors, 6).tolist())),
                             "reference": dict(zip(classes, np.round(profile.class_priors, 6).tolist()))},
            "predicted_class_distribution": dict(zip(classes, _share(stats.predicted_counts))),
            "input_channels": {"mean": channel_mean.tolist(), "std": channel_std.tolist(),
                               "reference_mean": profile.channel_mean, "reference_std": profile.channel_std,
                               "standardized_mean_shift": ((channel_mean.float() - ref_mean)
                                                           / ref_std.clamp_min(1e-6)).tolist()},
            "retrain_recommended": bool(reasons),
            "retrain_reasons": reasons,
        }
        plot = {"histogram": stats.histogram_counts.numpy(), "embeddings": sample.embeddings[:opts.mmd_samples, :2],
                "predicted": stats.predicted_counts.numpy(), "priors": priors}
        return result, plot

    # --- a whole input ------------------------------------------------------------------------------------------------
    def run(self, inputs: Inputs) -> tuple[dict, dict]:
        """Stream `inputs`: the overall result, with a `windows` time series in sliding-window mode."""
        start_time = time.perf_counter()
        opts = self.options
        if inputs.total < 2:
            raise SSLTrainError(f"input holds {inputs.total} sample: the drift tests need at least 2")
        if opts.window is not None and inputs.total < opts.window:
            raise SSLTrainError(f"input holds {inputs.total} samples, fewer than one window "
                                f"(monitor.window={opts.window})")
        whole = self.new_window()
        windows: list[dict] = []
        stride = opts.stride or opts.window
        active: dict[int, WindowStats] = {}
        per_source = opts.window is None and len(inputs.sources) > 1
        current_source, source_stats = None, None
        offsets = np.cumsum([0] + [s.count for s in inputs.sources])

        def close(stats: WindowStats, info: dict) -> None:
            if stats.n < 2:
                raise SSLTrainError(f"input={info.get('source', '?')}: {stats.n} sample; as a window of its own it "
                                    f"needs at least 2")
            result, _ = self.decide(stats, index=len(windows) + 1)
            windows.append({"index": len(windows), **info, **_brief(result)})

        for x, k, start in inputs.chunks(opts.batch_size):
            out = self.outputs(x)
            whole.add(out)
            if per_source:
                if current_source is not None and k != current_source:
                    close(source_stats, {"source": str(inputs.sources[current_source].path)})
                    source_stats = None
                current_source = k
                source_stats = source_stats or self.new_window()
                source_stats.add(out)
            elif opts.window is not None:
                pos = int(offsets[k]) + start
                end = pos + len(out)
                first = max(0, -(-(pos - opts.window + 1) // stride))
                for w in range(first, (end - 1) // stride + 1):
                    lo, hi = w * stride, w * stride + opts.window
                    if lo >= end or hi <= pos:
                        continue
                    stats = active.setdefault(w, self.new_window())
                    stats.add(out.slice(max(lo - pos, 0), min(hi, end) - pos))
                    if hi <= end:
                        close(active.pop(w), {"start": lo, "end": hi})
        if per_source and source_stats is not None:
            close(source_stats, {"source": str(inputs.sources[current_source].path)})

        result, plot = self.decide(whole, index=0)
        report = {"format_version": 1, **result}
        if windows:
            report["windows"] = windows
            report["windows_summary"] = {
                "count": len(windows), "drifting": sum(w["drift"] for w in windows),
                "first_drift": next((w["index"] for w in windows if w["drift"]), None),
                "retrain_recommended": sum(w["retrain_recommended"] for w in windows),
                "note": "each window is tested at the family-wise level alpha; over many windows expect about "
                        "alpha × windows false alarms on unshifted data"}
            if opts.window is not None:
                report["windows_summary"]["incomplete_tail_samples"] = (
                    inputs.total - (((inputs.total - opts.window) // stride) * stride + opts.window))
        report["options"] = asdict(opts)
        report["seconds"] = time.perf_counter() - start_time
        return report, plot


def _brief(result: dict) -> dict:
    """A window's line of the time series."""
    return {"samples": result["samples"], "drift": result["drift"], "drifting_tests": result["drifting_tests"],
            "p_values": {name: result["tests"][name]["p_value"] for name in TESTS},
            "psi": result["tests"]["confidence_psi"]["psi"],
            "estimated_accuracy": result["estimated_accuracy"],
            "retrain_recommended": result["retrain_recommended"]}


def _share(counts: Tensor) -> list[float]:
    c = counts.double()
    return (c / c.sum().clamp_min(1)).round(decimals=6).tolist()
