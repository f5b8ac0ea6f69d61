"""The shipped Hydra configs, installed as the package `ssl_train.conf` (pyproject.toml maps it to conf/).

A regular package, so that `pkg://ssl_train.conf` and importlib.resources find the folder the same way in an
editable install, an installed wheel and a user's own Hydra app. It holds only YAML; nothing to import here.
"""
