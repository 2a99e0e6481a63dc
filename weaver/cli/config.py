"""Where the Hydra config tree lives, and the resolvers it uses."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from weaver.errors import WeaverError


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


def chitchat_file(cache_dir: str | None = None) -> str:
    """`${weaver.chitchat:${paths.cache_dir}}`: the chitchat-dataset package's conversations as JSONL rows, written
    once under the cache dir (see `weaver.data.dialogue`)."""
    from weaver.data.dialogue import chitchat_file as write  # imports `datasets`: only when used

    return write(cache_dir)


def safe_name(metric: str) -> str:
    """A metric name usable in a file name: `val/bleu` -> `val_bleu`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)


def register_resolvers() -> None:
    """Idempotent, so tests and every entry point can call it."""
    resolvers = {"weaver.resource": resource_path, "weaver.safe_name": safe_name, "weaver.chitchat": chitchat_file}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def entry_point(config_name: str, run: Callable[[DictConfig], None]) -> Callable[[], None]:
    """The `main()` of a command-line tool: a Hydra app on `conf/<config_name>.yaml` calling `run(cfg)`, where a
    user error (`WeaverError`) exits with its one-line message instead of a traceback."""

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    def hydra_main(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except WeaverError as error:
            print(f"Error: {error}", file=sys.stderr)
            sys.exit(1)

    def main() -> None:
        register_resolvers()
        hydra_main()

    return main
