"""`ssl-train`: compose the config, train, test (final weights and best checkpoint), write metrics.json.

    ssl-train                                   # FixMatch, digits, 40 labels
    ssl-train algorithm=mean_teacher data.num_labels=20 seed=3
    ssl-train -m algorithm=fixmatch,mean_teacher seed=0,1,2
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from ssl_train.cli import optimized_value, results_table, run_cli
from ssl_train.run.config import CONFIG_PATH
from ssl_train.run.training import train


def run(cfg: DictConfig) -> dict[str, float]:
    """What `ssl-train` does for a composed config: the data audit when `audit.before_train` asks for it (it
    stops on test leakage), then training; returns the metrics written to metrics.json."""
    if (cfg.get("audit") or {}).get("before_train"):
        from ssl_train.audit.pipeline import audit_before_training  # imported only when asked for

        audit_before_training(cfg, Path(cfg.paths.output_dir) / "audit")
    return train(cfg)


def _task(cfg: DictConfig) -> float:
    metrics = run(cfg)
    print(results_table(cfg, metrics))
    return optimized_value(cfg, metrics)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> float:
    return run_cli(_task, cfg)


if __name__ == "__main__":
    main()
