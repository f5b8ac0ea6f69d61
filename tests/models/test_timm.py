"""`model=timm`: timm backbones train, export and rebuild from their checkpoint; pretrained weights from a local
file bring their own normalization and input size; bad names and paths are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from torch.nn import functional as F

from ssl_train.errors import SSLTrainError
from ssl_train.export.measure import threads
from ssl_train.export.pipeline import ExportOptions, export_checkpoint
from ssl_train.models.timm_backbone import TimmBackbone, rebuild_config
from ssl_train.run.artifacts import load_torchscript
from ssl_train.run.checkpoint import load_run
from ssl_train.run.config import compose
from ssl_train.run.training import build

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
QUICK_EXPORT = ExportOptions(pt2=False, reference_profile=False, calibration_samples=32, latency_batch_sizes=[1],
                             latency_repeats=1, latency_warmup=0, latency_threads=1)
# Two steps on 120 synthetic images of 4 classes; only the checkpoint the test saves itself is written (resnet18's
# checkpoints, net + EMA + optimizer state, are ~130 MB each).
TINY = ["trainer.accelerator=cpu", "trainer.max_steps=2", "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false", "data=synthetic", "data.dataset.num_samples=120",
        "data.dataset.num_classes=4", "data.num_labels=8", "data.batch_size=4", "data.mu=1",
        "data.eval_batch_size=64", "~callbacks.model_checkpoint", "~callbacks.last_checkpoint",
        "~callbacks.reference_profile", "~callbacks.pool_check", "model=timm"]


def fit(out: Path, *overrides: str):
    """Train the composed config two steps and save its checkpoint; (checkpoint path, trained module)."""
    datamodule, model, trainer = build(compose("config", [*TINY, f"paths.output_dir={out}", *overrides]))
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(out / "last.ckpt")
    return out / "last.ckpt", model


def saved_weights(path: Path, name: str, **kwargs) -> dict:
    """A timm model's state dict saved to `path` (.safetensors or torch), as weights from elsewhere would be:
    1000 ImageNet classes, 3 channels."""
    torch.manual_seed(1)
    state = timm.create_model(name, **kwargs).state_dict()
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(state, path)
    else:
        torch.save(state, path)
    return state


def same_outputs(trained, ckpt: Path, shape) -> None:
    """The network rebuilt from the checkpoint computes what the trained module evaluates."""
    x = torch.rand(5, *shape)
    with torch.no_grad():
        torch.testing.assert_close(load_run(ckpt).network(x), trained.eval_net.eval()(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", ["[1,8,8]", pytest.param("[3,32,32]", marks=pytest.mark.slow)])
def test_resnet18_trains_exports_and_rebuilds_from_its_checkpoint(tmp_path, shape):
    ckpt, trained = fit(tmp_path, "model.name=resnet18", f"data.dataset.image_shape={shape}")
    run = load_run(ckpt)
    backbone = run.network.backbone
    assert isinstance(backbone, TimmBackbone) and backbone.model.default_cfg["architecture"] == "resnet18"
    assert backbone.model.conv1.in_channels == run.input_shape[0]
    assert backbone.input_size == list(run.input_shape[1:]) and not backbone.resize  # runs at the data's size
    assert backbone.normalization is None and run.mean == trained.checkpoint_extras["mean"] != IMAGENET_MEAN
    same_outputs(trained, ckpt, run.input_shape)
    meta = export_checkpoint(ckpt, tmp_path / "export", QUICK_EXPORT)
    ts, int8 = meta["artifacts"]["model.ts"], meta["artifacts"]["model_int8.ts"]
    assert ts["method"] == "script" and ts["max_abs_diff"] <= 1e-5
    assert int8["size_bytes"] * 3 < ts["size_bytes"]
    x = torch.rand(3, *run.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(load_torchscript(tmp_path / "export" / "model.ts")(x), run.network(x),
                                   atol=1e-5, rtol=0)


def test_pretrained_weights_from_a_file_bring_their_normalization_and_input_size(tmp_path):
    weights = tmp_path / "resnet18.safetensors"
    state = saved_weights(weights, "resnet18")
    cfg = compose("config", [*TINY, f"paths.output_dir={tmp_path}", "data.dataset.image_shape=[3,32,32]",
                             "model.pretrained=true", f"model.checkpoint={weights}"])
    _, model, _ = build(cfg)
    net, backbone = model.net, model.net.backbone
    loaded = backbone.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert backbone.head.out_features == 4  # the 1000-class ImageNet head is replaced
    # ImageNet's statistics and 224x224 (resnet18's pretrained_cfg), not the synthetic data's, kept for the checkpoint
    assert model.checkpoint_extras["mean"] == IMAGENET_MEAN and model.checkpoint_extras["std"] == IMAGENET_STD
    assert net.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert net.std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    assert backbone.input_size == [224, 224] and backbone.resize and backbone.interpolation == "bicubic"
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():  # what the docstring promises: normalize, resize to the pretrained size, run timm's model
        expected = backbone.model.eval()(F.interpolate((x - mean) / std, size=(224, 224), mode="bicubic"))
        torch.testing.assert_close(net.eval()(x), expected, atol=1e-5, rtol=0)


def test_pretrained_weights_for_one_channel_images_sum_the_rgb_filters(tmp_path):
    weights = tmp_path / "resnet18.pth"
    state = saved_weights(weights, "resnet18")
    backbone = TimmBackbone((1, 8, 8), 10, "resnet18", pretrained=True, checkpoint=str(weights), img_size=32)
    torch.testing.assert_close(backbone.model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert backbone.normalization == ([pytest.approx(sum(IMAGENET_MEAN) / 3)], [pytest.approx(sum(IMAGENET_STD) / 3)])
    assert backbone.input_size == [32, 32] and backbone.resize  # model.img_size rules over the pretrained size


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    """FixMatch with a tiny ViT from a local weights file at 32x32 (position embeddings resampled from its 160 px),
    AdamW with layer-wise lr decay; the weights file is deleted after training."""
    out = tmp_path_factory.mktemp("vit")
    weights = out / "test_vit.pth"
    state = saved_weights(weights, "test_vit", dynamic_img_size=False)
    with threads(1):
        ckpt, trained = fit(out, "data.dataset.image_shape=[3,32,32]", "model.name=test_vit", "model.pretrained=true",
                            f"model.checkpoint={weights}", "model.img_size=32", "model.layer_decay=0.5",
                            "+model.model_args.dynamic_img_size=false", "optimizer=adamw", "optimizer.lr=5e-4")
    weights.unlink()
    return ckpt, trained, state


def test_a_vit_from_a_file_trains_with_layer_decay_and_rebuilds_without_the_file(vit_run, tmp_path):
    ckpt, trained, state = vit_run
    backbone = trained.net.backbone
    assert backbone.input_size == [32, 32] and not backbone.resize
    assert backbone.model.pos_embed.shape == (1, 1 + 2 * 2, 64) != state["pos_embed"].shape  # 160 px: 1 + 10x10
    assert trained.checkpoint_extras["mean"] == [0.5, 0.5, 0.5]  # test_vit's pretrained_cfg
    groups = trained.trainer.optimizers[0].param_groups
    lrs = [g["initial_lr"] for g in groups]
    layers = len(backbone.model.blocks) + 2  # patch embedding, blocks, final norm + head
    assert lrs[0] == max(lrs) == pytest.approx(5e-4) and min(lrs) == pytest.approx(5e-4 * 0.5 ** (layers - 1))
    stem = next(g for g in groups if any(p is backbone.model.pos_embed for p in g["params"]))
    assert stem["weight_decay"] == 0 and stem["initial_lr"] == min(lrs)  # no decay on position embeddings
    same_outputs(trained, ckpt, (3, 32, 32))  # model.checkpoint is gone: the rebuild never reads it
    meta = export_checkpoint(ckpt, tmp_path / "export", QUICK_EXPORT)
    assert meta["artifacts"]["model.ts"]["max_abs_diff"] <= 1e-5 and "model_int8.ts" in meta["artifacts"]


def test_a_rebuild_reads_no_weights_and_refuses_names_that_are_paths(vit_run, tmp_path):
    ckpt, trained, _ = vit_run
    config = load_run(ckpt).config["model"]
    assert rebuild_config(config) == {**config, "checkpoint": None, "load_weights": False}
    fresh = TimmBackbone((3, 32, 32), 4, **{k: v for k, v in rebuild_config(config).items() if k != "_target_"})
    assert not torch.equal(fresh.model.blocks[0].attn.qkv.weight, trained.net.backbone.model.blocks[0].attn.qkv.weight)
    checkpoint = torch.load(ckpt, weights_only=True)
    for key, value, refused in [("name", "hf-hub:timm/test_vit.r160_in1k", "expected a timm model name"),
                                ("name", "local-dir:/tmp/model", "expected a timm model name"),
                                ("model_args", {"checkpoint_path": "/tmp/w.pth"}, "model.model_args.checkpoint_path"),
                                ("model_args", {"patch_size": "../w.pth"}, "model.model_args.patch_size")]:
        checkpoint["ssl_train"]["config"]["model"] = {**config, key: value}
        torch.save(checkpoint, tmp_path / "edited.ckpt")
        with pytest.raises(SSLTrainError, match=refused) as error:
            load_run(tmp_path / "edited.ckpt")
        assert "\n" not in str(error.value) and str(tmp_path / "edited.ckpt") in str(error.value)


@pytest.mark.parametrize("options, message", [
    ({"name": "resnet1800"}, r"model.name='resnet1800' is not a timm model \(close: .*resnet18\b"),
    ({"name": "resnet18.nope"}, r"model.name='resnet18.nope': timm has no such weights for resnet18 \(.*tv_in1k"),
    ({"name": "resnet18", "pretrained": True, "checkpoint": "/no/such/weights.pth"},
     r"model.checkpoint=/no/such/weights.pth: no such weights file"),
    ({"name": "resnet18", "checkpoint": "w.pth"}, r"model.checkpoint=w.pth: set model.pretrained=true"),
    ({"name": "test_vit", "img_size": 8}, r"model.name=test_vit does not run on 3x8x8 inputs .*model.img_size"),
    ({"name": "resnet18", "layer_decay": 1.5}, r"model.layer_decay=1.5: expected a factor in \(0, 1\]"),
    ({"name": "resnet18", "model_args": {"pretrained_cfg_overlay": "x"}}, r"model.model_args.pretrained_cfg_overlay"),
    ({"name": "resnet18", "model_args": [1]}, r"model.model_args=\[1\]: expected a mapping"),
    ({"name": "resnet18", "model_args": {"nope": 1}}, r"model.name=resnet18: timm could not build it \(.*nope"),
])
def test_bad_options_are_one_line_errors_naming_them(options, message):
    with pytest.raises(SSLTrainError, match=message) as error:
        TimmBackbone((3, 8, 8), 10, **options)
    assert "\n" not in str(error.value)


def test_a_corrupt_weights_file_is_one_line_naming_it(tmp_path):
    weights = tmp_path / "broken.pth"
    weights.write_bytes(b"not a checkpoint")
    with pytest.raises(SSLTrainError, match=rf"model.name=resnet18: timm could not build it from "
                                            rf"model.checkpoint={weights} \(") as error:
        TimmBackbone((3, 8, 8), 10, "resnet18", pretrained=True, checkpoint=str(weights))
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_the_vit_recipe_runs_from_a_local_weights_file(tmp_path):
    weights = tmp_path / "vit_small_patch16_224.safetensors"
    state = saved_weights(weights, "vit_small_patch16_224")
    cfg = compose("config", ["experiment=cifar100_vit_s_200", f"paths.output_dir={tmp_path}",
                             f"model.checkpoint={weights}", "data=synthetic", "data.dataset.num_samples=2000",
                             "data.dataset.num_classes=100", "data.val_size=100", "data.num_workers=0", "trainer=cpu",
                             "~callbacks.reference_profile", "~callbacks.pool_check"])
    _, model, trainer = build(cfg)
    backbone = model.net.backbone
    loaded = backbone.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("head."))
    assert backbone.input_size == [224, 224] and backbone.resize and model.checkpoint_extras["mean"] == [0.5] * 3
    assert backbone.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    model.trainer = trainer
    lrs = [g["lr"] for g in model.configure_optimizers()["optimizer"].param_groups]
    assert max(lrs) == pytest.approx(5e-4) and min(lrs) == pytest.approx(5e-4 * 0.5 ** 13)  # embed, 12 blocks, head
    with torch.no_grad():
        assert model.net.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 100)
