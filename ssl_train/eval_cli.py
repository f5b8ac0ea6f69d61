"""`ssl-eval`: evaluate a checkpoint or an exported model; eval.json and report.html in the run directory.

    ssl-eval ckpt_path=runs/train/<run>/checkpoints/last.ckpt
    ssl-eval ckpt_path=exports/digits/model.ts data=digits
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssl_train.errors import SSLTrainError
from ssl_train.evaluation.pipeline import evaluate, summary_table
from ssl_train.train import CONFIG_DIR, run_cli


def data_config(cfg: DictConfig) -> dict | None:
    """The chosen data config (resolved), `data.root` moved to `data.dataset.root`; None when no data was chosen."""
    data = cfg.get("data")
    if data is None or "_target_" not in data:
        return None
    data = OmegaConf.to_container(data, resolve=True)
    root = data.pop("root", None)
    if root is not None:
        if "root" not in data.get("dataset", {}):
            name = str(data.get("dataset", {}).get("_target_", "?")).rsplit(".", 1)[-1]
            raise SSLTrainError(f"data.root={root}: the {name} dataset reads no folder (data=image_folder does)")
        data["dataset"]["root"] = root
    return data


def _task(cfg: DictConfig) -> dict:
    result = evaluate(cfg.ckpt_path, cfg.paths.output_dir, instantiate(cfg.eval), data_config(cfg))
    print(summary_table(result, cfg.paths.output_dir))
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    run_cli(_task, cfg)


if __name__ == "__main__":
    main()
