"""Weaver: a PyTorch Lightning + Hydra platform for neural text generation."""

__version__ = "0.1.0"
