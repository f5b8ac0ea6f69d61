import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from ssl_train.data.augment import OPS, SIGNED_OPS, StrongAugment, WeakAugment
from ssl_train.errors import SSLTrainError

ALL_OPS = {
    "identity", "autocontrast", "brightness", "color", "contrast", "equalize", "posterize",
    "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
}
UNIT_FACTOR = 0.95 / 0.9  # magnitude whose enhance factor 0.05 + 0.9 m is exactly 1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_images(n, c, h, w, seed=0):
    return torch.rand(n, c, h, w, generator=gen(seed))


def rand_uint8(n, c, h, w, seed=0):
    return torch.randint(0, 256, (n, c, h, w), generator=gen(seed), dtype=torch.uint8)


def full(n, value):
    return torch.full((n,), float(value))


# --------------------------------------------------------------------------
# whole-pipeline properties
# --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(16, 1, 8, 8), (16, 3, 32, 32)])
@pytest.mark.parametrize("aug", [WeakAugment(), StrongAugment()], ids=["weak", "strong"])
def test_shape_dtype_range(shape, aug):
    x = rand_images(*shape)
    y = aug(x, gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert not torch.equal(y, x)


def test_input_not_modified():
    x = rand_images(8, 3, 32, 32)
    before = x.clone()
    StrongAugment()(x, gen(1))
    assert torch.equal(x, before)


@pytest.mark.parametrize("aug", [WeakAugment(), StrongAugment()], ids=["weak", "strong"])
def test_seed_determinism(aug):
    x = rand_images(32, 3, 32, 32)
    a, b = aug(x, gen(7)), aug(x, gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, gen(8)))


@pytest.mark.parametrize("aug", [WeakAugment(), StrongAugment()], ids=["weak", "strong"])
def test_per_sample_independence(aug):
    n = 32
    x = rand_images(1, 3, 32, 32).expand(n, -1, -1, -1).contiguous()
    y = aug(x, gen(3)).flatten(1)
    distinct = torch.unique(y, dim=0).shape[0]
    # weak has 2 * 9 * 9 = 162 outcomes per sample, strong is practically continuous
    assert distinct >= (n * 3) // 4


def _padded_crops(x, pad, mode):
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    h, w = x.shape[-2:]
    return {(dy, dx): padded[..., dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)}


@pytest.mark.parametrize("padding, mode", [("reflect", "reflect"), ("zeros", "constant")])
def test_weak_translate_is_exact_padded_shift(padding, mode):
    n = 200
    x = rand_images(1, 1, 8, 8).expand(n, -1, -1, -1)
    y = WeakAugment(flip=False, translate=0.125, padding=padding)(x, gen(5))  # round(0.125 * 8) = 1 px
    crops = _padded_crops(x[:1], 1, mode)
    seen = set()
    for i in range(n):
        matches = [k for k, c in crops.items() if torch.equal(y[i:i + 1], c)]
        assert matches, f"sample {i} is not an exact {padding}-padded shift"
        seen.update(matches)
    assert seen == set(crops)  # all 9 shifts occur


def test_unknown_padding_raises():
    with pytest.raises(SSLTrainError, match=r"^data\.weak\.padding='wrap': expected one of reflect, zeros$"):
        WeakAugment(padding="wrap")


@pytest.mark.parametrize("kwargs, message", [
    (dict(translate=0.9), r"^data\.weak\.translate=0\.9: expected a number in \[0, 0\.5\]"),
    (dict(translate=-0.1), r"^data\.weak\.translate=-0\.1: expected a number in \[0, 0\.5\]"),
    (dict(translate="abc"), r"^data\.weak\.translate='abc': expected a number"),
    (dict(translate=float("nan")), r"^data\.weak\.translate=nan: expected a number"),
    (dict(flip="no"), r"^data\.weak\.flip='no': expected true or false$"),
    (dict(padding=0), r"^data\.weak\.padding=0: expected one of reflect, zeros$"),
])
def test_weak_refusals_name_the_config_key(kwargs, message):
    with pytest.raises(SSLTrainError, match=message):
        WeakAugment(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_ops=-1), r"^data\.strong\.num_ops=-1: expected an integer >= 0"),
    (dict(num_ops=1.5), r"^data\.strong\.num_ops=1\.5: expected an integer >= 0"),
    (dict(num_ops="two"), r"^data\.strong\.num_ops='two': expected an integer >= 0"),
    (dict(cutout=2), r"^data\.strong\.cutout=2: expected a number in \[0, 1\]"),
    (dict(cutout="big"), r"^data\.strong\.cutout='big': expected a number in \[0, 1\]"),
    (dict(cutout_fill=-1), r"^data\.strong\.cutout_fill=-1: expected a number in \[0, 1\]"),
    (dict(ops=["nope"]), r"^data\.strong\.ops=\['nope'\]: unknown op\(s\) \['nope'\]; valid ops are autocontrast, "),
    (dict(ops="rotate"), r"^data\.strong\.ops='rotate': expected null \(every op\) or a list of op names"),
    (dict(ops=3), r"^data\.strong\.ops=3: expected null \(every op\) or a list of op names"),
    (dict(ops=[]), r"^data\.strong\.ops=\[\]: expected at least one op name"),
    (dict(translate=0.6), r"^data\.strong\.translate=0\.6: expected a number in \[0, 0\.5\]"),
    (dict(padding="wrap"), r"^data\.strong\.padding='wrap': expected one of reflect, zeros$"),
    (dict(flip=1), r"^data\.strong\.flip=1: expected true or false$"),
])
def test_strong_refusals_name_the_config_key(kwargs, message):
    with pytest.raises(SSLTrainError, match=message) as err:
        StrongAugment(**kwargs)
    assert "\n" not in str(err.value)


def test_valid_edge_values_are_accepted():
    WeakAugment(translate=0, padding="zeros")
    WeakAugment(translate=0.5)
    StrongAugment(num_ops=0, cutout=0, cutout_fill=1, ops=("identity",))
    StrongAugment(cutout=1.0, ops=None)


def test_flip_off_never_flips_and_on_flips_about_half():
    n = 200
    img = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(n, 3, 8, 8)  # left-right asymmetric
    assert torch.equal(WeakAugment(flip=False, translate=0.0)(img, gen(2)), img)
    y = WeakAugment(flip=True, translate=0.0)(img, gen(2))
    same = (y == img).flatten(1).all(1)
    flipped = (y == img.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert 60 < int(flipped.sum()) < 140


def test_strong_identity_only_without_cutout_is_identity():
    x = rand_images(8, 3, 16, 16)
    aug = StrongAugment(flip=False, translate=0.0, ops=["identity"], cutout=0.0)
    assert torch.equal(aug(x, gen(0)), x)


def test_cutout_is_gray_square_of_bounded_size():
    n, size = 300, 32
    x = torch.full((n, 1, size, size), 0.2)
    y = StrongAugment(flip=False, translate=0.0, ops=["identity"], cutout=0.5)(x, gen(4))
    box = y == 0.5
    assert bool(((y == 0.2) | box).all())  # untouched elsewhere
    sides = []
    for i in range(n):
        rows = box[i, 0].any(1).nonzero()
        cols = box[i, 0].any(0).nonzero()
        if rows.numel() == 0:
            continue
        hh = int(rows.max() - rows.min() + 1)
        ww = int(cols.max() - cols.min() + 1)
        assert int(box[i].sum()) == hh * ww  # filled axis-aligned rectangle
        sides.append(max(hh, ww))
    assert len(sides) > n // 2
    assert max(sides) <= round(0.5 * size)
    assert max(sides) >= round(0.5 * size) - 2  # close to the maximum is reached


def test_cutout_fill_value():
    x = torch.full((64, 1, 8, 8), 0.2)
    y = StrongAugment(flip=False, translate=0.0, ops=["identity"], cutout=0.5, cutout_fill=0.0)(x, gen(1))
    assert bool(((y == 0.2) | (y == 0.0)).all()) and bool((y == 0.0).any())


def test_unknown_op_raises_with_names():
    with pytest.raises(SSLTrainError) as err:
        StrongAugment(ops=["rotate", "wobble"])
    assert "wobble" in str(err.value) and "solarize" in str(err.value)


def test_restricted_ops_only_use_those():
    x = torch.rand(16, 1, 8, 8, generator=gen(1))
    y = StrongAugment(flip=False, translate=0.0, cutout=0.0, ops=["solarize"])(x, gen(2))
    assert bool((((y - x).abs() < 1e-6) | ((y - (1 - x)).abs() < 1e-6)).all())


# --------------------------------------------------------------------------
# individual ops
# --------------------------------------------------------------------------


def test_ops_registry():
    assert set(OPS) == ALL_OPS
    assert SIGNED_OPS == {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}


def _identity_input(name):
    if name == "autocontrast":  # every channel already spans exactly 0..1
        x = rand_images(4, 3, 16, 16)
        x[..., 0, 0], x[..., 0, 1] = 0.0, 1.0
        return x
    if name == "equalize":  # a single gray level cannot be equalised
        return torch.full((4, 3, 16, 16), 0.3)
    return rand_images(4, 3, 16, 16)


IDENTITY_MAGNITUDE = {
    "identity": 0.5, "autocontrast": 0.5, "brightness": UNIT_FACTOR, "color": UNIT_FACTOR,
    "contrast": UNIT_FACTOR, "equalize": 0.5, "posterize": 1.0, "rotate": 0.0, "sharpness": UNIT_FACTOR,
    "shear_x": 0.0, "shear_y": 0.0, "solarize": 0.0, "translate_x": 0.0, "translate_y": 0.0,
}


@pytest.mark.parametrize("name", sorted(ALL_OPS))
def test_op_identity_magnitude(name):
    x = _identity_input(name)
    y = OPS[name](x, full(x.shape[0], IDENTITY_MAGNITUDE[name]))
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(ALL_OPS))
def test_op_per_sample_magnitudes(name):
    # sample i of a batch must equal the op applied to sample i alone
    x = rand_images(4, 3, 16, 16)
    m = torch.tensor([0.1, 0.4, 0.7, 1.0])
    if name in SIGNED_OPS:
        m = m * torch.tensor([1.0, -1.0, 1.0, -1.0])
    y = OPS[name](x, m)
    for i in range(4):
        torch.testing.assert_close(y[i:i + 1], OPS[name](x[i:i + 1], m[i:i + 1]), atol=1e-6, rtol=0)


def test_solarize():
    u = rand_uint8(2, 3, 16, 16)
    x = u.float() / 255
    y = OPS["solarize"](x, torch.tensor([0.5, 1.0]))  # threshold 128/255, then 0 (invert all)
    torch.testing.assert_close(y[0], TF.solarize(u[0], 128).float() / 255, atol=1e-6, rtol=0)
    torch.testing.assert_close(y[1], 1 - x[1], atol=1e-6, rtol=0)
    hand = OPS["solarize"](torch.tensor([0.4, 0.6]).view(1, 1, 1, 2), full(1, 0.5))
    torch.testing.assert_close(hand.flatten(), torch.tensor([0.4, 0.4]))


def test_posterize():
    u = rand_uint8(5, 3, 16, 16)
    x = u.float() / 255
    m = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.9])  # bits 4, 5, 6, 7, 8
    y = OPS["posterize"](x, m)
    for i, bits in enumerate([4, 5, 6, 7, 8]):
        torch.testing.assert_close(y[i], TF.posterize(u[i], bits).float() / 255, atol=1e-6, rtol=0)
    hand = OPS["posterize"](torch.full((1, 1, 1, 1), 204 / 255), full(1, 0.0))  # 0b11001100 -> 0b11000000
    assert abs(hand.item() - 192 / 255) < 1e-6


def test_equalize_matches_torchvision():
    u = rand_uint8(3, 3, 32, 32)
    u[1] = u[1] // 4  # narrow histogram
    y = OPS["equalize"](u.float() / 255, full(3, 0.5))
    torch.testing.assert_close(y, TF.equalize(u).float() / 255, atol=1e-6, rtol=0)


def test_equalize_two_level_small_image():
    x = torch.full((2, 1, 8, 8), 0.2)
    x[:, :, 4:] = 0.6
    y = OPS["equalize"](x, full(2, 0.5))
    expected = torch.zeros_like(x)
    expected[:, :, 4:] = 1.0
    assert torch.equal(y, expected)


def test_autocontrast():
    x = 0.2 + 0.4 * rand_images(3, 3, 16, 16)
    x[..., 0, 0], x[..., 0, 1] = 0.2, 0.6
    x[1, 2] = 0.5  # constant channel stays untouched
    y = OPS["autocontrast"](x, full(3, 0.5))
    torch.testing.assert_close(y, TF.autocontrast(x), atol=1e-6, rtol=0)
    assert y[0, 0, 0, 0] == 0.0 and abs(y[0, 0, 0, 1].item() - 1.0) < 1e-6
    assert torch.equal(y[1, 2], x[1, 2])


@pytest.mark.parametrize(
    "name, reference",
    [
        ("brightness", TF.adjust_brightness),
        ("color", TF.adjust_saturation),
        ("contrast", TF.adjust_contrast),
        ("sharpness", TF.adjust_sharpness),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_enhance_ops_match_torchvision(name, reference, channels):
    x = rand_images(3, channels, 16, 16)
    m = torch.tensor([0.0, 0.5, 1.0])  # factors 0.05, 0.5, 0.95
    y = OPS[name](x, m)
    for i in range(3):
        factor = 0.05 + 0.9 * m[i].item()
        torch.testing.assert_close(y[i], reference(x[i], factor), atol=1e-5, rtol=0)


def test_brightness_hand_value():
    x = rand_images(2, 3, 8, 8)
    torch.testing.assert_close(OPS["brightness"](x, full(2, 0.5)), 0.5 * x)


def test_color_is_identity_on_gray():
    x = rand_images(2, 1, 8, 8)
    assert torch.equal(OPS["color"](x, full(2, 0.0)), x)


def test_rotate():
    x = rand_images(3, 3, 16, 16)
    m = torch.tensor([0.5, -1.0, 0.3])
    y = OPS["rotate"](x, m)
    for i in range(3):
        ref = TF.rotate(x[i], 30.0 * m[i].item(), interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)
    # magnitude 3 -> 90 degrees counter-clockwise
    torch.testing.assert_close(OPS["rotate"](x, full(3, 3.0)), torch.rot90(x, 1, (-2, -1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, axis", [("shear_x", 0), ("shear_y", 1)])
def test_shear_matches_torchvision(name, axis):
    x = rand_images(2, 3, 16, 24)
    m = torch.tensor([0.7, -1.0])
    y = OPS[name](x, m)
    for i in range(2):
        deg = math.degrees(math.atan(0.3 * m[i].item()))
        shear = [deg, 0.0] if axis == 0 else [0.0, deg]
        ref = TF.affine(x[i], angle=0.0, translate=[0, 0], scale=1.0, shear=shear,
                        interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


def test_shear_x_hand_value():
    # shear factor 2 about the centre: row i (centre offset i - 3.5) samples columns j + 2i - 7
    x = rand_images(1, 1, 8, 8)
    y = OPS["shear_x"](x, full(1, 2.0 / 0.3))
    expected = torch.zeros_like(x)
    for i in range(8):
        for j in range(8):
            src = j + 2 * i - 7
            if 0 <= src < 8:
                expected[0, 0, i, j] = x[0, 0, i, src]
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)


def test_translate_hand_value():
    x = rand_images(2, 1, 8, 8)
    m = torch.tensor([2.0 / 2.4, -2.0 / 2.4])  # round(0.3 * m * 8) = +-2 px
    yx = OPS["translate_x"](x, m)
    torch.testing.assert_close(yx[0, ..., 2:], x[0, ..., :-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(yx[1, ..., :-2], x[1, ..., 2:], atol=1e-5, rtol=0)
    assert yx[0, ..., :2].abs().max() < 1e-6 and yx[1, ..., -2:].abs().max() < 1e-6  # zero fill
    yy = OPS["translate_y"](x, m)
    torch.testing.assert_close(yy[0, :, 2:], x[0, :, :-2], atol=1e-5, rtol=0)
    torch.testing.assert_close(yy[1, :, :-2], x[1, :, 2:], atol=1e-5, rtol=0)
