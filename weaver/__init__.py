"""Weaver: a PyTorch Lightning + Hydra platform for neural text generation."""

__version__ = "0.1.0"


def from_pretrained(folder: str) -> object:
    """A model folder written by `python export.py` (native or HuggingFace, with or without adapters), or the name
    of a model shipped with the package (`weaver.from_pretrained("weaver_small_pretrained")`)."""
    from pathlib import Path

    from weaver.config import pretrained_path
    from weaver.export import from_pretrained as load

    return load(folder if Path(folder).expanduser().exists() or "/" in folder else pretrained_path(folder))
