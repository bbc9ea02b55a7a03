"""Differential privacy for training and data selection, on opacus (docs/privacy.md)."""
