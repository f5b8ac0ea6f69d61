"""Distillation, end to end: the flow behind `ssl-distill`.

    teacher checkpoint → frozen teacher network (`ssl_train.algorithms.distillation.Distillation` trains the student)
      → the student trains on the teacher's data config (same splits, same seed: tested on the teacher's test split)
      → distill.json: teacher against student on that split → the student exported as `ssl-export` does
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ssl_train.errors import SSLTrainError
from ssl_train.export import measure
from ssl_train.export.pipeline import export_checkpoint
from ssl_train.io import write_json_atomic
from ssl_train.run.batches import float_batches
from ssl_train.run.checkpoint import load_run
from ssl_train.run.safety import Trust
from ssl_train.run.training import train


def distill(cfg: DictConfig, trust: Trust | None = None) -> dict:
    """Distill, test and (with `cfg.export_student`) export; returns the comparison also written to distill.json,
    with the student's training metrics and export metadata."""
    teacher = load_run(cfg.teacher_ckpt, option="teacher_ckpt", trust=trust)
    with open_dict(cfg):
        cfg.data = OmegaConf.merge(teacher.config["data"], cfg.get("data") or {})
    metrics = train(cfg, teacher=teacher.network)
    best = Path(str(metrics.get("test/checkpoint", "")))
    if not best.is_file():
        raise SSLTrainError("distillation finished without a checkpoint to test and export "
                            "(keep callbacks.model_checkpoint)")
    student = load_run(best, trust=trust)
    datamodule = student.datamodule()
    test = list(float_batches(datamodule.test.known(), datamodule.source.scale, cfg.export.eval_batch_size))
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
    export = export_checkpoint(best, out_dir, instantiate(cfg.export), trust) if cfg.export_student else None
    return summary | {"metrics": metrics, "export": export}
