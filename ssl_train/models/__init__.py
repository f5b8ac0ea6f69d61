"""Backbones sharing one interface: ``Model(input_shape, num_classes)`` with ``features``, ``feature_dim`` and
``head``; `build_classifier` sizes one for a data module."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ssl_train.models.classifier import Classifier, input_stats


def build_classifier(backbone: Callable[..., nn.Module], datamodule, **options) -> Classifier:
    """`Classifier(backbone(input_shape, num_classes, **options), mean, std)` sized and normalized for the data
    module's data (set up here if it is not yet; a pretrained backbone brings its own mean/std); the backbone's
    config is kept for checkpoints."""
    if datamodule.source is None:
        datamodule.setup()
    net = backbone(input_shape=datamodule.input_shape, num_classes=datamodule.num_classes, **options)
    network = Classifier(net, *input_stats(net, datamodule))
    network.model_config = {"_target_": f"{backbone.__module__}.{backbone.__qualname__}",
                            **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}
    return network
