"""Hyperparameter search: ssl_train's Optuna sweeper for Hydra (`ssl-train -m hparams_search=fixmatch`).

- sweeper.py  the sweep: a resumable Optuna study in SQLite, trials in batches through Hydra's launcher
- space.py    Hydra sweep strings (interval, tag(log, ...), choice, range) ⇄ Optuna distributions, override lines
- pruning.py  the trial side: a Lightning callback reporting the validation curve, stopping pruned trials
- summary.py  summary.json / summary.md / trials.png in the sweep directory

The Hydra plugin itself (hydra_plugins/ssl_train_sweeper) only registers the config and delegates here.
"""
