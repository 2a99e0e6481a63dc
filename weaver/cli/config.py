"""Where the Hydra config tree lives, and the resolvers it uses."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from omegaconf import OmegaConf


def config_dir() -> Path:
    """`conf/` inside an installed wheel, else the repository's `conf/` beside the package (editable install)."""
    packaged = Path(str(files("weaver"))) / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"


def resource_path(name: str) -> str:
    """Absolute path of a corpus shipped with the package (`${weaver.resource:ddtp_en_de}`)."""
    path = Path(str(files("weaver.data"))) / "resources" / name
    if not path.exists():
        raise FileNotFoundError(f"No embedded resource named '{name}' in {path.parent}")
    return str(path)


def safe_name(metric: str) -> str:
    """A metric name usable in a file name: `val/bleu` -> `val_bleu`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)


def register_resolvers() -> None:
    """Idempotent, so tests and every entry point can call it."""
    for name, resolver in {"weaver.resource": resource_path, "weaver.safe_name": safe_name}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
