"""`ssl-distill`: train a smaller student from a trained teacher, then export it like `ssl-export`.

    ssl-distill teacher_ckpt=runs/train/<run>/checkpoints/last.ckpt
    ssl-distill teacher_ckpt=... model=mlp model.hidden=[64] algorithm.temperature=2

The run directory holds what `ssl-train` writes (config.yaml, checkpoints, csv logs,
metrics.json for the student), the student's artifacts and card, and distill.json
comparing student and teacher on the same test split.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ssl_train.errors import SSLTrainError
from ssl_train.export import measure
from ssl_train.export.card import artifact_table
from ssl_train.export.checkpoint import load_run
from ssl_train.export.pipeline import export_checkpoint
from ssl_train.io import write_json_atomic
from ssl_train.train import CONFIG_DIR, optimized_value, results_table, run_cli, train


def distill(cfg: DictConfig) -> dict:
    """Distill, test and (with `export_student`) export; returns the comparison also written to distill.json."""
    teacher = load_run(cfg.teacher_ckpt, option="teacher_ckpt")
    with open_dict(cfg):
        cfg.data = OmegaConf.merge(teacher.config["data"], cfg.get("data") or {})
    metrics = train(cfg)
    best = Path(str(metrics.get("test/checkpoint", "")))
    if not best.is_file():
        raise SSLTrainError("distillation finished without a checkpoint to test and export "
                            "(keep callbacks.model_checkpoint)")
    student = load_run(best)
    datamodule = student.datamodule()
    test = list(measure.float_batches(datamodule.test, datamodule.source.scale, cfg.export.eval_batch_size))
    summary = {
        "teacher": {"checkpoint": str(teacher.path), "sha256": teacher.sha256,
                    "parameters": measure.num_parameters(teacher.network),
                    **measure.evaluate(teacher.network, test, len(teacher.classes))},
        "student": {"checkpoint": str(best), "parameters": measure.num_parameters(student.network),
                    **measure.evaluate(student.network, test, len(student.classes))},
    }
    summary["parameter_ratio"] = summary["student"]["parameters"] / summary["teacher"]["parameters"]
    summary["acc_change"] = summary["student"]["acc"] - summary["teacher"]["acc"]
    out_dir = Path(cfg.paths.output_dir)
    write_json_atomic(out_dir / "distill.json", summary)
    export = export_checkpoint(best, out_dir, instantiate(cfg.export)) if cfg.export_student else None
    return summary | {"metrics": metrics, "export": export}


def _task(cfg: DictConfig) -> float:
    summary = distill(cfg)
    print(results_table(cfg, summary["metrics"]))
    t, s = summary["teacher"], summary["student"]
    print(f"teacher {t['parameters']:,} parameters, test acc {t['acc']:.4f}; student {s['parameters']:,} "
          f"({summary['parameter_ratio']:.1%}), test acc {s['acc']:.4f} ({100 * summary['acc_change']:+.2f} points)")
    if summary["export"]:
        print(artifact_table(summary["export"]))
    return optimized_value(cfg, summary["metrics"])


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="distill")
def main(cfg: DictConfig) -> float:
    return run_cli(_task, cfg)


if __name__ == "__main__":
    main()
