"""ssl_train: semi-supervised learning with Lightning modules composed by Hydra."""

__version__ = "0.1.0"
