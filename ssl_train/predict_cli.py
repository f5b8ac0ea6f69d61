"""`ssl-predict`: calibrated class probabilities for every image of a folder or an array → predictions.csv/.parquet.

    ssl-predict model_path=runs/train/<run> input=new_images/
    ssl-predict model_path=exports/digits variant=int8 input=batch.npy output=preds.parquet
"""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from ssl_train.cli import run_cli
from ssl_train.run.config import CONFIG_PATH
from ssl_train.run.predict import predict
from ssl_train.run.safety import Trust


def _task(cfg: DictConfig) -> dict:
    result = predict(cfg.model_path, cfg.input, cfg.output, instantiate(cfg.predict), Trust.from_config(cfg))
    temperature = result["temperature"]
    print(f"{result['rows']} images of {result['input']['path']} predicted by {result['model']['path']} "
          f"({result['model']['kind']}) in {result['time_s']:.1f} s\n"
          f"temperature {temperature['value']:.4f}: {temperature['source']}\n→ {result['output']}")
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def main(cfg: DictConfig) -> None:
    run_cli(_task, cfg)


if __name__ == "__main__":
    main()
