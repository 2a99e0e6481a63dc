"""Weaver: a PyTorch Lightning + Hydra platform for neural text generation."""

__version__ = "0.1.0"


def from_pretrained(folder: str) -> object:
    """A model folder written by `python export.py` (native or HuggingFace, with or without adapters)."""
    from weaver.export import from_pretrained as load

    return load(folder)
