"""ssl_train: semi-supervised learning with Lightning modules composed by Hydra.

The names below are the Python API (README, "Python API"); each is imported on first use, so that
`import ssl_train` stays light and the layers below import nothing from here. No name equals a subpackage's
(`ssl_train.monitor` must stay the package for dotted `_target_` paths): the drift check is `detect_drift`,
the data audit `audit_data`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    # core: data, networks, algorithms
    "SSLDataModule": "ssl_train.data.datamodule", "WeakAugment": "ssl_train.data.augment",
    "StrongAugment": "ssl_train.data.augment", "datasets": "ssl_train.data.datasets",
    "SmallCNN": "ssl_train.models.cnn", "MLP": "ssl_train.models.mlp", "WideResNet": "ssl_train.models.wrn",
    "ResNet18": "ssl_train.models.resnet", "Classifier": "ssl_train.models.classifier",
    "build_classifier": "ssl_train.models",
    "FixMatch": "ssl_train.algorithms.fixmatch", "MeanTeacher": "ssl_train.algorithms.mean_teacher",
    "PiModel": "ssl_train.algorithms.pi_model", "PseudoLabel": "ssl_train.algorithms.pseudo_label",
    "Supervised": "ssl_train.algorithms.supervised", "Distillation": "ssl_train.algorithms.distillation",
    # run layer: configs, training, loading
    "compose": "ssl_train.run.config", "build": "ssl_train.run.training", "train": "ssl_train.run.training",
    "load_run": "ssl_train.run.checkpoint", "load_model": "ssl_train.run.artifacts",
    "float_batches": "ssl_train.run.batches", "Trust": "ssl_train.run.safety",
    "predict": "ssl_train.run.predict:predict", "PredictOptions": "ssl_train.run.predict",
    # tools
    "export_checkpoint": "ssl_train.export.pipeline", "ExportOptions": "ssl_train.export.pipeline",
    "evaluate": "ssl_train.evaluation.pipeline", "EvalOptions": "ssl_train.evaluation.pipeline",
    "audit_data": "ssl_train.audit.pipeline:audit", "AuditOptions": "ssl_train.audit.pipeline",
    "detect_drift": "ssl_train.monitor.pipeline:monitor", "MonitorOptions": "ssl_train.monitor.detector",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'ssl_train' has no attribute {name!r}")
    module_name, _, attribute = _API[name].partition(":")
    module = importlib.import_module(module_name)
    if attribute:  # "module:attribute", also where the attribute is named like its module (run/predict.py)
        return getattr(module, attribute)
    return module if module_name.endswith(f".{name}") else getattr(module, name)


def __dir__() -> list[str]:
    return [*globals(), *__all__]
