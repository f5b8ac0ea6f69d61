"""`ssl-eval`: evaluate a checkpoint or an exported model; eval.json and report.html in the run directory.

    ssl-eval ckpt_path=runs/train/<run>/checkpoints/last.ckpt
    ssl-eval ckpt_path=exports/digits/model.ts data=digits
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from ssl_train.cli import data_config, run_cli
from ssl_train.evaluation.pipeline import evaluate, summary_table
from ssl_train.run.config import CONFIG_PATH
from ssl_train.run.safety import Trust


def _task(cfg: DictConfig) -> dict:
    result = evaluate(cfg.ckpt_path, cfg.paths.output_dir, instantiate(cfg.eval), data_config(cfg),
                      Trust.from_config(cfg))
    print(summary_table(result, cfg.paths.output_dir))
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def main(cfg: DictConfig) -> None:
    run_cli(_task, cfg)


if __name__ == "__main__":
    main()
