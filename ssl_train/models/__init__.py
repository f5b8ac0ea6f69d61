"""Backbones sharing one interface: ``Model(input_shape, num_classes)`` with ``features``, ``feature_dim`` and ``head``."""
