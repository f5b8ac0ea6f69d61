"""Data: dataset sources, seeded splits, batched augmentation and the SSL data module."""
