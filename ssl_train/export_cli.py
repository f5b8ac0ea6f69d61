"""`ssl-export`: a run checkpoint to verified deployable artifacts, a metadata.json and a model card.

    ssl-export ckpt_path=runs/train/<run>/checkpoints/last.ckpt
    ssl-export ckpt_path=... export.int8=false export.onnx=true hydra.run.dir=exports/digits
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from ssl_train.export.card import artifact_table
from ssl_train.export.pipeline import export_checkpoint
from ssl_train.train import CONFIG_DIR, run_cli


def export(cfg: DictConfig) -> dict:
    """Export `cfg.ckpt_path` into the run directory; returns the metadata."""
    return export_checkpoint(cfg.ckpt_path, cfg.paths.output_dir, instantiate(cfg.export))


def _task(cfg: DictConfig) -> None:
    meta = export(cfg)
    print(f"{meta['source_checkpoint']['path']} → {cfg.paths.output_dir}\n{artifact_table(meta)}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    run_cli(_task, cfg)


if __name__ == "__main__":
    main()
