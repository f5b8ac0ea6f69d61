"""`ssl-distill`: train a smaller student from a trained teacher, then export it like `ssl-export`.

    ssl-distill teacher_ckpt=runs/train/<run>/checkpoints/last.ckpt
    ssl-distill teacher_ckpt=... model=mlp model.hidden=[64] algorithm.temperature=2

The run directory holds what `ssl-train` writes (config.yaml, checkpoints, csv logs,
metrics.json for the student), the student's artifacts and card, and distill.json
comparing student and teacher on the same test split.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ssl_train.cli import optimized_value, results_table, run_cli
from ssl_train.export.card import artifact_table
from ssl_train.export.distill import distill
from ssl_train.run.config import CONFIG_PATH
from ssl_train.run.safety import Trust


def _task(cfg: DictConfig) -> float:
    summary = distill(cfg, Trust.from_config(cfg))
    print(results_table(cfg, summary["metrics"]))
    t, s = summary["teacher"], summary["student"]
    print(f"teacher {t['parameters']:,} parameters, test acc {t['acc']:.4f}; student {s['parameters']:,} "
          f"({summary['parameter_ratio']:.1%}), test acc {s['acc']:.4f} ({100 * summary['acc_change']:+.2f} points)")
    if summary["export"]:
        print(artifact_table(summary["export"]))
    return optimized_value(cfg, summary["metrics"])


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="distill")
def main(cfg: DictConfig) -> float:
    return run_cli(_task, cfg)


if __name__ == "__main__":
    main()
