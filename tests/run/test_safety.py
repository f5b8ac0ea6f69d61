"""check_config: only ssl_train's shipped `_target_`s (and what the user trusts) pass, at any depth; every refusal
is one line naming the target, where it sits and the file."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from ssl_train.errors import SSLTrainError
from ssl_train.run.safety import Trust, UntrustedFileError, check_config, shipped_targets

SOURCE = "/shared/crafted.ckpt"
WRITE = {"_target_": "pathlib.Path.write_text", "self": {"_target_": "pathlib.Path", "_args_": ["/tmp/marker"]},
         "data": "pwned"}


def refusal(config, trust: Trust | None = None, where: str = "model") -> str:
    with pytest.raises(UntrustedFileError) as info:
        check_config(config, SOURCE, trust, where=where)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "\n" not in message, message
    assert SOURCE in message
    return message


@pytest.fixture(scope="module")
def saved_config(digits_ckpt) -> dict:
    return torch.load(digits_ckpt, map_location="cpu", weights_only=True)["ssl_train"]["config"]


def test_a_real_saved_config_passes(saved_config, digits_ckpt):
    for section in ("model", "data", "algorithm"):
        check_config(saved_config[section], digits_ckpt, where=section)
    assert saved_config["model"]["_target_"] in shipped_targets()
    assert saved_config["data"]["dataset"]["_target_"] in shipped_targets()


def test_shipped_targets_are_ssl_trains_own_config_targets():
    targets = shipped_targets()
    assert {"ssl_train.models.cnn.SmallCNN", "ssl_train.data.datamodule.SSLDataModule",
            "ssl_train.data.datasets.digits"} <= targets
    assert all(t.startswith("ssl_train.") for t in targets)
    assert "ssl_train.io.write_text_atomic" not in targets


def test_plain_data_without_targets_passes():
    check_config({"widths": [32, 64], "name": "x", "nested": [{"a": 1}, (2, 3)]}, SOURCE)
    check_config([], SOURCE)


@pytest.mark.parametrize("config, where, target, location", [
    ({"_target_": "os.system", "command": "touch /tmp/marker"}, "", "os.system", "<root>"),
    ({"_target_": "os.system", "command": "touch /tmp/marker"}, "model", "os.system", "model"),
    ({"_target_": "ssl_train.models.cnn.SmallCNN", "widths": [WRITE, 64]}, "model", "pathlib.Path.write_text",
     "model.widths[0]"),
    ({"_target_": "ssl_train.models.cnn.SmallCNN", "widths": [32, {**WRITE, "_target_": "pathlib.Path"}]},
     "model", "pathlib.Path", "model.widths[1]"),
    ({"_target_": "builtins.exec", "_partial_": True, "source": "print(1)"}, "data.dataset", "builtins.exec",
     "data.dataset"),
    ({"_target_": "ssl_train.models.cnn.SmallCNN", "_args_": [{"_target_": "subprocess.run", "args": ["id"]}]},
     "model", "subprocess.run", "model._args_[0]"),
    ({"dataset": {"_target_": "ssl_train.data.datasets.digits",
                  "extra": [1, {"inner": {"_target_": "shutil.rmtree", "path": "/"}}]}},
     "data", "shutil.rmtree", "data.dataset.extra[1].inner"),
    ({"_target_": "ssl_train.io.write_text_atomic", "path": "/tmp/marker", "text": "pwned"}, "model",
     "ssl_train.io.write_text_atomic", "model"),
    ({"_target_": "ssl_train.models.cnn.SmallCNN", "widths": (32, ({"_target_": "os.system"},))}, "model",
     "os.system", "model.widths[1][0]"),
], ids=["top-level", "top-level-model", "chain-in-list", "nested-self", "partial", "args", "dict-list-dict",
        "ssl_train-non-config-function", "tuples"])
def test_foreign_targets_are_refused_at_any_depth(config, where, target, location):
    message = refusal(config, where=where)
    assert f"refused _target_ {target!r} at {location}:" in message
    assert f"trust_targets=[{target}]" in message


def test_the_nested_payload_is_named_even_under_a_foreign_parent():
    # The outermost foreign target is named; the inner one (pathlib.Path) is refused just as well.
    message = refusal(copy.deepcopy(WRITE))
    assert "'pathlib.Path.write_text' at model:" in message
    message = refusal(WRITE, Trust(targets=("pathlib.Path.write_text",)))
    assert "'pathlib.Path' at model.self:" in message


@pytest.mark.parametrize("target", [42, None, ["os", "system"], {"_target_": "os.system"}])
def test_a_non_string_target_is_refused(target):
    message = refusal({"_target_": "ssl_train.models.cnn.SmallCNN", "widths": [{"_target_": target}]})
    assert "non-string _target_ at model.widths[0]" in message


@pytest.mark.parametrize("config, location", [
    ({"_target_": "ssl_train.models.cnn.SmallCNN", "widths": ["${oc.env:HOME}"]}, "model.widths[0]"),
    ({"_target_": "ssl_train.data.datasets.image_folder", "root": "/data/${oc.env:HOME}"}, "model.root"),
    ({"_target_": "ssl_train.models.cnn.SmallCNN", "${oc.env:HOME}": 1}, "model['${oc.env:HOME}']"),
    ({"_target_": "ssl_train.models.cnn.SmallCNN", "widths": [r"\${oc.env:HOME}"]}, "model.widths[0]"),
])
def test_an_interpolation_is_refused(config, location):
    message = refusal(config)
    assert f"refused an interpolation at {location} " in message
    assert "${oc.env:HOME}" in message


def test_an_interpolation_in_an_omegaconf_node_is_refused_unresolved(monkeypatch):
    monkeypatch.setenv("SSL_TRAIN_SECRET", "do-not-print")
    node = OmegaConf.create({"_target_": "ssl_train.models.cnn.SmallCNN", "widths": ["${oc.env:SSL_TRAIN_SECRET}"]})
    message = refusal(node)
    assert "${oc.env:SSL_TRAIN_SECRET}" in message and "do-not-print" not in message
    assert "'os.system' at model.widths[0]" in refusal(OmegaConf.create({"widths": [{"_target_": "os.system"}]}))


def test_trust_one_target_allows_that_one_only():
    trust = Trust(targets=("x.y.Z",))
    check_config({"_target_": "x.y.Z", "a": [{"_target_": "ssl_train.models.mlp.MLP"}]}, SOURCE, trust)
    for other in ("x.y.Z2", "x.y", "x.y.Z.attr", "x.y.W", "os.system"):
        assert f"{other!r}" in refusal({"_target_": other}, trust)
    # Trusting a target does not trust interpolations.
    assert "interpolation" in refusal({"_target_": "x.y.Z", "a": "${oc.env:HOME}"}, trust)


def test_trust_a_module_allows_its_names_only():
    trust = Trust(targets=("mymod.*",))
    for target in ("mymod.Net", "mymod.make_net", "mymod._Private"):
        check_config({"_target_": target}, SOURCE, trust)
    # Not what the module imports (Hydra resolves `mymod.os.system` attribute by attribute), nor submodules,
    # nor other modules that share the prefix.
    for other in ("mymod", "mymod.", "mymod.os.system", "mymod.Path.write_text", "mymod.sub.Net", "mymodx.Net",
                  "othermod.Net", "os.system", "ssl_train.io.write_text_atomic"):
        assert f"{other!r}" in refusal({"_target_": other}, trust)
    check_config({"_target_": "mymod.sub.Net"}, SOURCE, Trust(targets=("mymod.sub.*",)))


def test_trust_everything_allows_any_target_and_interpolation():
    trust = Trust(everything=True)
    check_config({"_target_": "os.system", "x": [{"_target_": "pathlib.Path.write_text"}], "y": "${oc.env:HOME}"},
                 SOURCE, trust)
    # ... but not a non-string target, which Hydra could not import anyway.
    assert "non-string" in refusal({"_target_": 1}, trust)


def test_default_trust_is_ssl_trains_own_only():
    assert Trust() == Trust(targets=(), everything=False)
    assert not Trust().allows("os.system")
    assert not Trust().allows("ssl_train.io.write_text_atomic")
    assert Trust().allows("ssl_train.models.cnn.SmallCNN")


def test_trust_from_a_command_config():
    cfg = OmegaConf.create({"trust_targets": ["a.b.C", "mymod.*"], "trust_checkpoint": False})
    assert Trust.from_config(cfg) == Trust(targets=("a.b.C", "mymod.*"))
    assert Trust.from_config(OmegaConf.create({"trust_targets": "a.b.C"})) == Trust(targets=("a.b.C",))
    assert Trust.from_config(OmegaConf.create({})) == Trust()
    assert Trust.from_config(OmegaConf.create({"trust_checkpoint": True})).everything
    with pytest.raises(SSLTrainError, match="trust_checkpoint='false': expected true or false"):
        Trust.from_config(OmegaConf.create({"trust_checkpoint": "false"}))


def test_self_referencing_and_absurdly_deep_configs_are_one_line(tmp_path):
    loop = {"_target_": "ssl_train.models.cnn.SmallCNN", "widths": []}
    loop["widths"].append(loop)
    torch.save({"model": loop}, tmp_path / "loop.pt")  # the unpickler's memo rebuilds the cycle
    loaded = torch.load(tmp_path / "loop.pt", weights_only=True)["model"]
    assert loaded["widths"][0] is loaded
    assert "refused a config that contains itself at model.widths[0]" in refusal(loaded)

    deep: dict = {"_target_": "ssl_train.models.cnn.SmallCNN"}
    for _ in range(5000):
        deep = {"a": deep}
    assert "nested deeper than" in refusal(deep)

    shared = [{"_target_": "ssl_train.models.mlp.MLP"}]
    check_config({"a": shared, "b": shared, "c": [shared, shared]}, SOURCE)  # shared, not a cycle: fine


def test_odd_keys_and_targets_cannot_break_the_line():
    message = refusal({"_target_": "ssl_train.models.cnn.SmallCNN", "a\nerror: fake": {"_target_": "os.system"}})
    assert "model['a\\nerror: fake']" in message
    message = refusal({"_target_": "os.system\nerror: all good"})
    assert "'os.system\\nerror: all good'" in message and "trust_targets=[" not in message
