"""`ssl-audit`: audit a dataset before training; audit.json and audit.html in the run directory.

    ssl-audit data=image_folder data.root=ROOT
    ssl-audit data=image_folder data.root=ROOT audit.fail_on_leakage=true    # exit 1 on val/test leakage
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from ssl_train.audit.pipeline import audit, check_leakage, summary_table
from ssl_train.cli import data_config, run_cli
from ssl_train.run.config import CONFIG_PATH


def _task(cfg: DictConfig) -> dict:
    options = instantiate(cfg.audit)
    result = audit(data_config(cfg), cfg.paths.output_dir, options)
    print(summary_table(result, cfg.paths.output_dir))
    if options.fail_on_leakage:
        check_leakage(result, cfg.paths.output_dir)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="audit")
def main(cfg: DictConfig) -> None:
    run_cli(_task, cfg)


if __name__ == "__main__":
    main()
