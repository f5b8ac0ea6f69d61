"""The run layer: what the tools share between the core (data, models, algorithms) and the commands.

    config.py     the shipped configs: where they are, composing them from Python
    safety.py     configs read from files: only ssl_train's own targets are instantiated
    checkpoint.py a run checkpoint back to its network and data module
    artifacts.py  exported models (TorchScript, torch.export) and any model file → a predictor
    batches.py    float pixel batches of a data module split
    data.py       a data config → a set-up data module
    training.py   build, train and test one run from a composed config
    progress.py   a progress bar on a terminal, log lines elsewhere (Slurm, pipes, CI)
    tracking.py   what a run's loggers get at the end (MLflow, TensorBoard hparams); an export's files for its run
    profile.py    the reference profile of a trained model (what ssl-monitor compares against)
    inputs.py     new images (folders, .npy/.pt arrays): checked up front, read in chunks
    predict.py    a model + new images → predictions.csv/.parquet through Lightning's predict loop
"""
