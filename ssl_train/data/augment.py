"""Batched weak/strong image augmentation with per-sample random parameters.

torchvision's transforms draw one parameter set per call, so augmenting a whole
batch at once would give every sample the same crop/op/magnitude. Here every
sample draws its own parameters and all work is done with batched tensor ops
(no Python loop over samples), so the same code runs on CPU or on a GPU batch.

Inputs are float tensors ``N x C x H x W`` in ``[0, 1]`` (C = 1 or 3). All
randomness comes from an explicit ``torch.Generator`` living on the input's
device, so the output is a pure function of (input, generator state).

The RandAugment pool and value ranges follow the FixMatch paper (RA variant,
Table 12) and the PyTorch reference (kekmodel ``fixmatch_augment_pool``).
Every entry of :data:`OPS` is a deterministic pure function
``op(x, magnitude) -> x`` with one magnitude per sample; for the signed
geometric ops (rotate, shear_*, translate_*) the magnitude lies in ``[-1, 1]``
and the sign is chosen by the caller (:class:`StrongAugment` draws it at
random), for all other ops it lies in ``[0, 1]``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_train.errors import SSLTrainError

__all__ = ["OPS", "SIGNED_OPS", "StrongAugment", "WeakAugment"]

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # same luma weights as torchvision


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample vector ``[N]`` to broadcast against ``N x C x H x W``."""
    return v.to(dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)


def _blend(x: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance`` blend: factor 0 gives ``degenerate``, 1 gives ``x``."""
    f = _per_sample(factor, x)
    return (degenerate + f * (x - degenerate)).clamp(0.0, 1.0)


def _enhance_factor(magnitude: Tensor) -> Tensor:
    """FixMatch range for the PIL enhance ops: factor in [0.05, 0.95]."""
    return 0.05 + 0.9 * magnitude


def _grayscale(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _to_levels(x: Tensor) -> Tensor:
    """Quantise [0, 1] floats to the 256 uint8 levels (as int64 for indexing)."""
    return (x.clamp(0.0, 1.0) * 255.0).round().long()


def _affine(x: Tensor, matrix: Tensor, shift: Tensor) -> Tensor:
    """Warp each sample with its own affine map, zero fill, bilinear.

    ``matrix`` (``N x 2 x 2``) and ``shift`` (``N x 2``, pixels) map *output*
    pixel coordinates, measured from the image centre with y pointing down, to
    input coordinates. They are converted to ``affine_grid``'s normalised
    coordinates so that non-square images are not distorted.
    """
    n, _, h, w = x.shape
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=x.dtype, device=x.device)
    theta = torch.empty(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, :, :2] = matrix.to(x.dtype) * scale.view(1, 2, 1) / scale.view(1, 1, 2)
    theta[:, :, 2] = shift.to(x.dtype) * scale
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _shear_matrix(s: Tensor, axis: int) -> Tensor:
    m = torch.eye(2, dtype=s.dtype, device=s.device).repeat(s.shape[0], 1, 1)
    if axis == 0:
        m[:, 0, 1] = s  # x_in = x + s * y
    else:
        m[:, 1, 0] = s  # y_in = y + s * x
    return m


# ----------------------------------------------------------------------------
# RandAugment ops: op(x, magnitude[N]) -> x
# ----------------------------------------------------------------------------


def identity(x: Tensor, magnitude: Tensor) -> Tensor:
    """Return ``x`` unchanged (keeps the 'no-op' probability of the RA pool)."""
    return x


def autocontrast(x: Tensor, magnitude: Tensor) -> Tensor:
    """Stretch each channel's min..max to 0..1; constant channels are kept (PIL)."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    flat = span <= 0
    scale = torch.where(flat, torch.ones_like(span), 1.0 / span.clamp_min(1e-12))
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    return ((x - lo) * scale).clamp(0.0, 1.0)


def brightness(x: Tensor, magnitude: Tensor) -> Tensor:
    """Blend with black; enhance factor ``0.05 + 0.9 * m`` (FixMatch range)."""
    return _blend(x, torch.zeros_like(x), _enhance_factor(magnitude))


def color(x: Tensor, magnitude: Tensor) -> Tensor:
    """Blend with the grayscale image (saturation); identity for 1 channel."""
    if x.shape[1] == 1:
        return x
    return _blend(x, _grayscale(x).expand_as(x), _enhance_factor(magnitude))


def contrast(x: Tensor, magnitude: Tensor) -> Tensor:
    """Blend with the image's mean gray level (one scalar per sample, as PIL)."""
    mean = _grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean.expand_as(x), _enhance_factor(magnitude))


def equalize(x: Tensor, magnitude: Tensor) -> Tensor:
    """Per-sample, per-channel histogram equalisation on 256 levels.

    Uses PIL's lookup table ``lut[i] = (cum[i-1] + step // 2) // step`` with
    ``step = (#pixels not in the brightest bin) // 255``. PIL (and torchvision)
    leave the image untouched when that count is below 255, which would make
    equalize a no-op on small images such as 8x8 digits; there the same formula
    is used with the fractional step ``count / 255`` instead (both agree at the
    boundary, count = 255). Images with a single level are returned unchanged.
    """
    n, c, h, w = x.shape
    q = _to_levels(x).view(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, q, torch.ones_like(q))
    cum_before = hist.cumsum(1) - hist  # pixels strictly below each level
    top = q.amax(dim=1, keepdim=True)
    count = h * w - hist.gather(1, top)  # pixels not in the brightest used bin
    step = count // 255
    big = step > 0
    # Integer form of floor((cum + half) / step) for both step definitions:
    # big:   step = count // 255,   half = step // 2
    # small: step = count / 255,    half = step / 2  ->  (510 cum + count) / (2 count)
    num = torch.where(big, cum_before + step // 2, 510 * cum_before + count)
    den = torch.where(big, step, 2 * count).clamp_min(1)
    lut = torch.div(num, den, rounding_mode="floor").clamp_(0, 255)
    out = (lut.gather(1, q).to(x.dtype) / 255.0).view_as(x)
    return torch.where((count > 0).view(n, c, 1, 1), out, x)


def posterize(x: Tensor, magnitude: Tensor) -> Tensor:
    """Keep the top ``bits = 4 + floor(5 m)`` (4..8) bits of each uint8 level."""
    bits = (4 + torch.floor(5.0 * magnitude)).clamp(4, 8).long().to(x.device)
    mask = (-(1 << (8 - bits))).view(-1, 1, 1, 1)  # two's complement high-bit mask
    out = (_to_levels(x) & mask).to(x.dtype) / 255.0
    return torch.where((bits == 8).view(-1, 1, 1, 1), x, out)


def rotate(x: Tensor, magnitude: Tensor) -> Tensor:
    """Rotate counter-clockwise by ``30 * m`` degrees (m in [-1, 1]) about the centre."""
    rad = magnitude.to(x.dtype) * (30.0 * math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # Output->input map for a counter-clockwise turn in y-down image coordinates.
    matrix = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    return _affine(x, matrix, torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device))


def sharpness(x: Tensor, magnitude: Tensor) -> Tensor:
    """Blend with PIL's 3x3 smoothing of the image (border pixels kept)."""
    n, c, h, w = x.shape
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).view(1, 1, 3, 3)
    smooth = F.conv2d(x.reshape(n * c, 1, h, w), kernel).view(n, c, h - 2, w - 2)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(x, degenerate, _enhance_factor(magnitude))


def shear_x(x: Tensor, magnitude: Tensor) -> Tensor:
    """Horizontal shear ``x_in = x + 0.3 m * y`` about the centre (m in [-1, 1])."""
    s = 0.3 * magnitude.to(device=x.device, dtype=x.dtype)
    return _affine(x, _shear_matrix(s, 0), torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device))


def shear_y(x: Tensor, magnitude: Tensor) -> Tensor:
    """Vertical shear ``y_in = y + 0.3 m * x`` about the centre (m in [-1, 1])."""
    s = 0.3 * magnitude.to(device=x.device, dtype=x.dtype)
    return _affine(x, _shear_matrix(s, 1), torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device))


def solarize(x: Tensor, magnitude: Tensor) -> Tensor:
    """Invert pixels at or above ``threshold = (1 - m) * 256/255``.

    In uint8 terms that is PIL's ``solarize(img, 256 - 256 m)``, so m = 0 is an
    exact identity and m = 1 inverts everything.
    """
    threshold = _per_sample((1.0 - magnitude) * (256.0 / 255.0), x)
    return torch.where(x >= threshold - 1e-6, 1.0 - x, x)


def _translate(x: Tensor, magnitude: Tensor, axis: int) -> Tensor:
    size = x.shape[-1] if axis == 0 else x.shape[-2]
    pixels = torch.round(0.3 * magnitude.to(device=x.device, dtype=x.dtype) * size)
    shift = torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device)
    shift[:, axis] = -pixels  # content moves by +pixels
    eye = torch.eye(2, dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 2)
    return _affine(x, eye, shift)


def translate_x(x: Tensor, magnitude: Tensor) -> Tensor:
    """Move content right by ``round(0.3 m W)`` pixels (m in [-1, 1]), zero fill."""
    return _translate(x, magnitude, 0)


def translate_y(x: Tensor, magnitude: Tensor) -> Tensor:
    """Move content down by ``round(0.3 m H)`` pixels (m in [-1, 1]), zero fill."""
    return _translate(x, magnitude, 1)


OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "identity": identity,
    "autocontrast": autocontrast,
    "brightness": brightness,
    "color": color,
    "contrast": contrast,
    "equalize": equalize,
    "posterize": posterize,
    "rotate": rotate,
    "sharpness": sharpness,
    "shear_x": shear_x,
    "shear_y": shear_y,
    "solarize": solarize,
    "translate_x": translate_x,
    "translate_y": translate_y,
}
"""RandAugment pool of the FixMatch paper: name -> ``op(x, magnitude[N])``."""

SIGNED_OPS: frozenset[str] = frozenset({"rotate", "shear_x", "shear_y", "translate_x", "translate_y"})
"""Ops whose magnitude is signed; :class:`StrongAugment` multiplies by a random ±1."""


# ----------------------------------------------------------------------------
# batched weak / strong augmentation
# ----------------------------------------------------------------------------


def _check_input(x: Tensor) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float tensor of shape N x C x H x W, got {x.dtype} {tuple(x.shape)}")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_number(key: str, value, lo: float, hi: float, what: str = "") -> None:
    """Refuse anything but a real number in [lo, hi] (NaN included), naming the config key."""
    if not _is_number(value) or not lo <= value <= hi:
        raise SSLTrainError(f"{key}={value!r}: expected a number in [{lo:g}, {hi:g}]{what}")


def _check_weak(prefix: str, flip, translate, padding) -> None:
    """The options WeakAugment and StrongAugment share; `prefix` is the config node (data.weak, data.strong)."""
    if not isinstance(flip, bool):
        raise SSLTrainError(f"{prefix}.flip={flip!r}: expected true or false")
    _check_number(f"{prefix}.translate", translate, 0.0, 0.5, " (the largest shift, a fraction of the image size)")
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise SSLTrainError(f"{prefix}.padding={padding!r}: expected one of {', '.join(sorted(PADDINGS))}")


def _rand(n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=generator, device=device)


PADDINGS = {"reflect": "reflect", "zeros": "constant"}


def _random_shift(x: Tensor, pad_h: int, pad_w: int, generator: torch.Generator, padding: str = "reflect") -> Tensor:
    """Pad (reflect or zeros), then crop each sample at its own integer offset (exact, via gather)."""
    n, c, h, w = x.shape
    dev = x.device
    dy = torch.randint(0, 2 * pad_h + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad_w + 1, (n,), generator=generator, device=dev)
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=PADDINGS[padding])
    rows = (torch.arange(h, device=dev).view(1, h) + dy.view(n, 1)).view(n, 1, h, 1)
    out = padded.gather(2, rows.expand(n, c, h, w + 2 * pad_w))
    cols = (torch.arange(w, device=dev).view(1, w) + dx.view(n, 1)).view(n, 1, 1, w)
    return out.gather(3, cols.expand(n, c, h, w))


def _cutout(x: Tensor, max_frac: float, generator: torch.Generator, fill: float = 0.5) -> Tensor:
    """A `fill`-valued square of side ``round(v * min(H, W))``, v ~ U(0, max_frac), clipped at borders."""
    n, _, h, w = x.shape
    dev = x.device
    side = torch.round(_rand(n, generator, dev) * max_frac * min(h, w)).long()
    cy = torch.randint(0, h, (n,), generator=generator, device=dev)
    cx = torch.randint(0, w, (n,), generator=generator, device=dev)
    y0, x0 = cy - side // 2, cx - side // 2
    ys = torch.arange(h, device=dev).view(1, h)
    xs = torch.arange(w, device=dev).view(1, w)
    in_y = (ys >= y0.view(n, 1)) & (ys < (y0 + side).view(n, 1))
    in_x = (xs >= x0.view(n, 1)) & (xs < (x0 + side).view(n, 1))
    box = (in_y.view(n, 1, h, 1) & in_x.view(n, 1, 1, w))
    return torch.where(box, torch.full_like(x, fill), x)


class WeakAugment(nn.Module):
    """Flip (optional) + random translation by up to `translate` of the size with reflect padding (FixMatch 'weak').

    Each sample is flipped horizontally with probability 0.5 and then shifted
    by integers drawn uniformly from ``[-round(translate*H), round(translate*H)]``
    (same for W) out of a reflect-padded copy, i.e. TF ``pad(REFLECT)`` +
    ``random_crop`` as in the FixMatch reference. No interpolation: every output
    pixel is an input pixel. ``padding="zeros"`` fills with black instead, for
    images drawn on a blank background (digits), where reflection draws strokes.
    """

    def __init__(self, flip: bool = True, translate: float = 0.125, padding: str = "reflect"):
        super().__init__()
        _check_weak("data.weak", flip, translate, padding)
        self.flip = flip
        self.translate = translate
        self.padding = padding

    def extra_repr(self) -> str:
        return f"flip={self.flip}, translate={self.translate}, padding={self.padding}"

    def to_config(self) -> dict:
        """The Hydra config that rebuilds this augmentation (saved in checkpoints)."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", "flip": self.flip,
                "translate": self.translate, "padding": self.padding}

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        _check_input(x)
        n, _, h, w = x.shape
        if self.flip:
            flipped = _rand(n, generator, x.device) < 0.5
            x = torch.where(flipped.view(n, 1, 1, 1), x.flip(-1), x)
        pad_h, pad_w = round(self.translate * h), round(self.translate * w)
        if pad_h or pad_w:
            x = _random_shift(x, pad_h, pad_w, generator, self.padding)
        return x.clamp(0.0, 1.0)


class StrongAugment(nn.Module):
    """Weak + RandAugment with random magnitudes (FixMatch 'RA' variant) + Cutout.

    After :class:`WeakAugment`, each sample applies ``num_ops`` ops drawn
    uniformly with replacement from ``ops`` (default: all of :data:`OPS`), each
    with its own magnitude ``m ~ U(0, 1)`` and, for :data:`SIGNED_OPS`, a random
    sign. Every op runs once per round on just the samples that picked it.
    Geometric ops fill uncovered pixels with zeros (black, like PIL). Finally a
    Cutout square of value ``cutout_fill`` (0.5 gray as in FixMatch) and side
    ``round(v * min(H, W))``, ``v ~ U(0, cutout)``, is pasted at a uniformly random
    centre (clipped at the border).
    """

    def __init__(
        self,
        flip: bool = True,
        translate: float = 0.125,
        num_ops: int = 2,
        cutout: float = 0.5,
        ops: list[str] | None = None,
        padding: str = "reflect",
        cutout_fill: float = 0.5,
    ):
        super().__init__()
        _check_weak("data.strong", flip, translate, padding)
        if not _is_int(num_ops) or num_ops < 0:
            raise SSLTrainError(f"data.strong.num_ops={num_ops!r}: expected an integer >= 0 "
                                f"(RandAugment ops per image)")
        _check_number("data.strong.cutout", cutout, 0.0, 1.0,
                      " (the largest Cutout side, a fraction of the image size)")
        _check_number("data.strong.cutout_fill", cutout_fill, 0.0, 1.0, " (the Cutout square's pixel value)")
        valid = ", ".join(sorted(OPS))
        if isinstance(ops, str) or not (ops is None or isinstance(ops, Iterable)):
            raise SSLTrainError(f"data.strong.ops={ops!r}: expected null (every op) or a list of op names "
                                f"such as [rotate,solarize] from: {valid}")
        names = list(OPS) if ops is None else list(ops)
        unknown = [name for name in names if not isinstance(name, str) or name not in OPS]
        if unknown:
            raise SSLTrainError(f"data.strong.ops={names!r}: unknown op(s) {unknown}; valid ops are {valid}")
        if not names:
            raise SSLTrainError(f"data.strong.ops=[]: expected at least one op name (or null for every op: {valid})")
        self.weak = WeakAugment(flip=flip, translate=translate, padding=padding)
        self.num_ops = num_ops
        self.cutout = cutout
        self.cutout_fill = cutout_fill
        self.ops = names

    def extra_repr(self) -> str:
        return f"num_ops={self.num_ops}, cutout={self.cutout}, cutout_fill={self.cutout_fill}, ops={self.ops}"

    def to_config(self) -> dict:
        """The Hydra config that rebuilds this augmentation (saved in checkpoints)."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", "flip": self.weak.flip,
                "translate": self.weak.translate, "padding": self.weak.padding, "num_ops": self.num_ops,
                "cutout": self.cutout, "cutout_fill": self.cutout_fill,
                "ops": list(self.ops)}

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        x = self.weak(x, generator)  # validates input, returns a fresh tensor
        n, dev = x.shape[0], x.device
        for _ in range(self.num_ops):
            choice = torch.randint(0, len(self.ops), (n,), generator=generator, device=dev)
            magnitude = _rand(n, generator, dev)
            sign = torch.where(_rand(n, generator, dev) < 0.5, -1.0, 1.0)
            for k, name in enumerate(self.ops):
                if name == "identity":
                    continue
                idx = (choice == k).nonzero().squeeze(1)
                if idx.numel() == 0:
                    continue
                m = magnitude[idx] * sign[idx] if name in SIGNED_OPS else magnitude[idx]
                x.index_copy_(0, idx, OPS[name](x[idx], m).to(x.dtype))
        if self.cutout > 0:
            x = _cutout(x, self.cutout, generator, self.cutout_fill)
        return x.clamp(0.0, 1.0)
