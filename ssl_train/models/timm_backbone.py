"""Any timm classifier as a backbone (`model=timm model.name=...`), randomly initialised or from timm's weights.

Pretrained weights expect the inputs they were trained on, so with `pretrained=true` the network takes its
normalization (mean/std) and input size from the weights' `pretrained_cfg` (timm's
`resolve_model_data_config`), not from the data: `normalization` hands the mean/std to `Classifier`, and images
whose size differs from the pretrained one are resized inside the network (see `TimmBackbone`). A data set with
another channel count than the weights' is adapted by timm's `in_chans` (a 1-channel image sees the sum of the
RGB filters).

timm is an optional extra (`pip install 'ssl_train[timm]'`), imported only when a backbone is built.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_train.errors import SSLTrainError, first_line
from ssl_train.models._checks import check_data, int_list, is_number, shown

TARGET = "ssl_train.models.timm_backbone.TimmBackbone"
# create_model arguments that TimmBackbone sets itself, or that select weights, files or downloads: never taken
# from model.model_args (a config read from a checkpoint must not name a file or URL to load).
RESERVED_ARGS = frozenset({"model_name", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                           "cache_dir", "num_classes", "in_chans", "img_size", "scriptable", "exportable", "no_jit",
                           "features_only", "device", "dtype"})
_WORD = re.compile(r"[A-Za-z0-9_]+")


def _timm():
    try:
        import timm
    except ModuleNotFoundError:
        raise SSLTrainError("model=timm needs the timm package: pip install 'ssl_train[timm]'") from None
    return timm


class TimmBackbone(nn.Module):
    """`timm.create_model(name, num_classes=..., in_chans=<data channels>)` behind the backbone interface
    (`features`, `feature_dim`, `head`).

    Input size: the network runs at `img_size` when given, else at the pretrained input size
    (`pretrained_cfg["input_size"]`, e.g. 224x224) with `pretrained=true`, else at the data's size. Models with
    a fixed input size (ViTs) are created at that size (`img_size=`; timm resamples pretrained position
    embeddings to it). When it differs from the data's size, `forward` first resizes the images with
    `F.interpolate` (the pretrained config's bicubic or bilinear, antialiased when shrinking), so exported
    models still take the data's images.

    Args:
        name: a timm model name, optionally with a pretrained tag (`vit_small_patch16_224.augreg_in21k`); hub
            (`hf-hub:`) and local-dir sources are refused: local weights go through `checkpoint`.
        pretrained: start from timm's weights (the Hugging Face cache, downloaded if missing) or `checkpoint`.
        checkpoint: a local weights file (state dict; `.safetensors`, torch `.pth`/`.bin` read with
            weights_only=True, or a JAX `.npz` for the models timm reads those for), loaded through timm's
            `pretrained_cfg_overlay=dict(file=...)`, which adapts the classifier and input channels.
        img_size: the size the network runs at, an int or [height, width] (see above).
        layer_decay: layer-wise learning-rate decay: the top layer (head) keeps the learning rate and each layer
            below gets this factor times the one above (`timm.optim.param_groups_layer_decay`); null: one rate.
        model_args: further `create_model` keywords of the model itself (drop_path_rate, patch_size, ...):
            numbers, booleans and plain words only, never weights or files.
        load_weights: false builds the same network without reading any weights (rebuilding a trained
            network from an ssl_train checkpoint, whose state dict replaces them).
    """

    __jit_unused_properties__ = ["head"]  # a property TorchScript need not compile: forward does not use it

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, name: str, pretrained: bool = False,
                 checkpoint: str | None = None, img_size: int | Sequence[int] | None = None,
                 layer_decay: float | None = None, model_args: Mapping | None = None, load_weights: bool = True):
        super().__init__()
        channels, height, width = check_data("model=timm", input_shape, num_classes)
        timm = _timm()
        name, cfg = _check_name(timm, name)
        for key, value in (("model.pretrained", pretrained), ("load_weights", load_weights)):
            if not isinstance(value, bool):
                raise SSLTrainError(f"{key}={value!r}: expected true or false")
        if layer_decay is not None and not (is_number(layer_decay) and 0 < layer_decay <= 1):
            raise SSLTrainError(f"model.layer_decay={layer_decay!r}: expected a factor in (0, 1] or null")
        args = _check_model_args(model_args)
        loading = pretrained and load_weights
        checkpoint = None if checkpoint is None else str(checkpoint)
        if checkpoint is not None and load_weights:
            if not pretrained:
                raise SSLTrainError(f"model.checkpoint={checkpoint}: set model.pretrained=true to start from it")
            if not Path(checkpoint).is_file():
                raise SSLTrainError(f"model.checkpoint={checkpoint}: no such weights file")

        if img_size is not None:
            size = int_list("model.img_size", [img_size] * 2 if isinstance(img_size, int) else img_size, 2,
                            " (the input size the network runs at: 224 or [224, 224])")
        elif pretrained and cfg.get("input_size"):
            size = [int(v) for v in cfg["input_size"][1:]]
        else:
            size = [height, width]
        if cfg.get("fixed_input_size"):
            args["img_size"] = tuple(size)
        overlay = {"file": checkpoint, "custom_load": Path(checkpoint).suffix == ".npz"} \
            if loading and checkpoint is not None else None
        try:
            self.model = timm.create_model(name, pretrained=loading, pretrained_cfg_overlay=overlay,
                                           num_classes=num_classes, in_chans=channels, **args)
        except Exception as exc:  # timm, huggingface_hub and the model's own code raise many types
            reason = f"({first_line(exc)[:300]})"
            if overlay:
                reason = f"from model.checkpoint={checkpoint} {reason}"
            elif loading:
                reason = (f"with its pretrained weights {reason}; offline: put them in the Hugging Face cache or give "
                          f"model.checkpoint=PATH")
            raise SSLTrainError(f"model.name={name}: timm could not build it {reason}") from None
        try:  # a probe at the size it runs at: a patch or stem too large for the images fails here, in one line
            with torch.no_grad():
                self.model.eval()(torch.zeros(1, channels, *size))
        except Exception as exc:
            raise SSLTrainError(f"model.name={name} does not run on {channels}x{size[0]}x{size[1]} inputs "
                                f"({first_line(exc)[:200]}): set a larger model.img_size") from None
        self.model.train()

        self.layer_decay = layer_decay
        self.input_size = size
        self.resize = size != [height, width]
        self.interpolation = "bicubic" if pretrained and cfg.get("interpolation") == "bicubic" else "bilinear"
        self.antialias = size[0] < height or size[1] < width
        self.feature_dim = int(self.head.in_features if isinstance(self.head, nn.Linear) else self.model.num_features)
        self.normalization = None  # None: the data's channel statistics (`Classifier` applies them)
        if pretrained:
            data_cfg = timm.data.resolve_model_data_config(self.model)
            self.normalization = (_per_channel(data_cfg["mean"], channels), _per_channel(data_cfg["std"], channels))

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def _resize(self, x: Tensor) -> Tensor:
        if self.resize:
            x = F.interpolate(x, size=self.input_size, mode=self.interpolation, align_corners=False,
                              antialias=self.antialias)
        return x

    def features(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(self._resize(x)), pre_logits=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self.model.forward_features(self._resize(x)))

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups: no weight decay on biases, norms and what the model names
        (`no_weight_decay()`: position embeddings, class tokens), and with `layer_decay` an `lr_scale` per layer,
        the top layer's group first (the learning rate `train/lr` logs)."""
        from timm.optim import param_groups_layer_decay, param_groups_weight_decay

        skip = self.model.no_weight_decay() if hasattr(self.model, "no_weight_decay") else ()
        if self.layer_decay is None:
            return param_groups_weight_decay(self.model, weight_decay, no_weight_decay_list=skip)
        groups = param_groups_layer_decay(self.model, weight_decay, no_weight_decay_list=skip,
                                          layer_decay=self.layer_decay)
        return sorted(groups, key=lambda group: -group["lr_scale"])


def rebuild_config(model: Mapping) -> Mapping:
    """A model config read from a file, made to build its network without reading weights: for a timm backbone,
    no download and no `model.checkpoint` (the file's own state dict holds the weights); others unchanged."""
    if isinstance(model, Mapping) and model.get("_target_") == TARGET:
        return {**model, "checkpoint": None, "load_weights": False}
    return model


def _check_name(timm, name) -> tuple[str, dict]:
    """(name, its pretrained_cfg as a dict) for a registered timm architecture with an optional pretrained tag:
    never a hub id, path or URL."""
    if not isinstance(name, str) or not name:
        raise SSLTrainError(f"model.name={name!r}: expected a timm model name, e.g. resnet18 or "
                            f"vit_small_patch16_224")
    try:
        source, _ = timm.models.parse_model_name(name)
    except ValueError:
        source = "a path"
    if source is not None:
        raise SSLTrainError(f"model.name={name!r}: expected a timm model name (models from the Hugging Face hub or a "
                            f"folder are not taken; give local weights as model.checkpoint=PATH)")
    architecture, _ = timm.models.split_model_name_tag(name)
    if not timm.models.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=4, cutoff=0.6)
        hint = f"close: {', '.join(close)}; " if close else ""
        raise SSLTrainError(f"model.name={name!r} is not a timm model ({hint}timm.list_models('*{architecture[:6]}*') "
                            f"lists those by name)")
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an unknown tag
        tags = list(timm.models.get_arch_pretrained_cfgs(architecture))
        tags = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "") if tags else "none"
        raise SSLTrainError(f"model.name={name!r}: timm has no such weights for {architecture} ({tags})") from None
    return name, cfg.to_dict() if cfg is not None else {}


def _check_model_args(model_args) -> dict:
    if model_args is not None and not isinstance(model_args, Mapping):
        raise SSLTrainError(f"model.model_args={shown(model_args)!r}: expected a mapping of the model's own "
                            f"create_model keywords, e.g. {{drop_path_rate: 0.1}}")
    args = {}
    for key, value in (model_args or {}).items():
        listed = isinstance(value, Sequence) and not isinstance(value, str)
        values = shown(value) if listed else [value]
        plain = all(v is None or is_number(v) or isinstance(v, bool) or (isinstance(v, str) and _WORD.fullmatch(v))
                    for v in values)
        if not isinstance(key, str) or key in RESERVED_ARGS or not _WORD.fullmatch(key) or not plain:
            raise SSLTrainError(f"model.model_args.{key}={shown(value)!r}: expected a keyword of the model itself "
                                f"(not {', '.join(sorted(RESERVED_ARGS))}) with numbers, booleans or plain words")
        args[key] = tuple(values) if listed else value
    return args


def _per_channel(values: Sequence[float], channels: int) -> list[float]:
    """Pretrained RGB statistics for `channels` inputs, as timm adapts the first convolution: one channel sums the
    RGB filters (so the mean statistic), more channels repeat them cyclically."""
    values = [float(v) for v in values]
    if channels == 1 and len(values) > 1:
        return [sum(values) / len(values)]
    return [values[i % len(values)] for i in range(channels)]
