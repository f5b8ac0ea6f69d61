"""`ssl-export`: a run checkpoint to verified deployable artifacts, a metadata.json and a model card.

    ssl-export ckpt_path=runs/train/<run>/checkpoints/last.ckpt
    ssl-export ckpt_path=... export.int8=false export.onnx=true hydra.run.dir=exports/digits
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from ssl_train.cli import run_cli
from ssl_train.export.card import artifact_table
from ssl_train.export.pipeline import export_checkpoint
from ssl_train.run.config import CONFIG_PATH
from ssl_train.run.safety import Trust


def _task(cfg: DictConfig) -> None:
    meta = export_checkpoint(cfg.ckpt_path, cfg.paths.output_dir, instantiate(cfg.export), Trust.from_config(cfg))
    print(f"{meta['source_checkpoint']['path']} → {cfg.paths.output_dir}\n{artifact_table(meta)}")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def main(cfg: DictConfig) -> None:
    run_cli(_task, cfg)


if __name__ == "__main__":
    main()
