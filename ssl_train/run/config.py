"""Where the shipped configs live, and composing them from Python.

The Hydra configs sit in conf/ at the top of the repository and are installed as the package `ssl_train.conf`
(pyproject.toml maps the one to the other), so an editable install, an installed wheel and a user's own Hydra
app (`hydra.searchpath: [pkg://ssl_train.conf]`) all find them by the same module name, never by a path
relative to this file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

CONFIG_MODULE = "ssl_train.conf"
# What every `@hydra.main(config_path=CONFIG_PATH, ...)` uses. hydra.main takes a `pkg://` config_path as is
# (Hydra >= 1.3.2) and reads it through importlib.resources, so it needs no file path and works wherever the
# package is installed; `--config-dir DIR` still adds a user's own folder in front of it.
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


def config_dir() -> Path:
    """The real folder of the shipped configs (e.g. `config_dir() / "algorithm"`), for code that lists them.

    Resolved through importlib.resources so that it is the folder Hydra reads: conf/ in a checkout (editable
    install), site-packages/ssl_train/conf/ after a wheel install. Both are plain folders (never a zip).
    """
    return Path(str(files(CONFIG_MODULE)))


def compose(config_name: str = "config", overrides: Sequence[str] = ()) -> DictConfig:
    """The shipped top-level config `config_name` (config, export, distill, eval, audit, monitor) with
    `overrides`, composed as the command would compose it, but from Python (tests, notebooks, scripts).

    The Hydra node is composed too, its run directory resolved (`runs/<task_name>/<time>` under the current
    directory unless `hydra.run.dir=...` is given) and installed as the HydraConfig, so that
    `paths.output_dir: ${hydra:runtime.output_dir}` resolves as in a real run. Like @hydra.main, the returned
    config has no `hydra` node, and the HydraConfig is process-wide: the latest compose() defines it.
    Nothing is created on disk; `paths.output_dir=DIR` overrides the run directory altogether.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    # initialize_config_module refuses to run while another Hydra is set up (a previous compose, a running
    # app): set that one aside and put it back afterwards.
    global_hydra = GlobalHydra.instance()
    outer = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)

    # What hydra.core.utils.run_job does before calling the task: the run directory becomes runtime.output_dir.
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = os.path.abspath(str(cfg.hydra.run.dir))
    OmegaConf.resolve(cfg.hydra)  # ${now:...} fixed once; ${task_name} taken from this config
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
