"""Where the Hydra config tree lives, and the resolvers it uses (`${weaver.resource:...}`, ...)."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from weaver.errors import WeaverError


def config_dir() -> Path:
    """`conf/` inside an installed wheel, else the repository's `conf/` beside the package (editable install)."""
    packaged = Path(str(files("weaver"))) / "conf"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "conf"


def resource_path(name: str) -> str:
    """Absolute path of a corpus shipped with the package (`${weaver.resource:ddtp_en_de}`)."""
    path = Path(str(files("weaver.data"))) / "resources" / name
    if not path.exists():
        raise FileNotFoundError(f"No embedded resource named '{name}' in {path.parent}")
    return str(path)


def pretrained_path(name: str) -> str:
    """Absolute path of a model shipped with the package (`${weaver.pretrained:weaver_small_pretrained}`)."""
    path = Path(str(files("weaver"))) / "pretrained" / name
    if not (path / "config.json").is_file():
        shipped = sorted(p.name for p in path.parent.iterdir() if p.is_dir()) if path.parent.is_dir() else []
        raise WeaverError(f"No model named '{name}' ships with this package (shipped: {', '.join(shipped) or 'none'}).")
    return str(path)


def chitchat_file(cache_dir: str | None = None) -> str:
    """`${weaver.chitchat:${paths.cache_dir}}`: the chitchat-dataset package's conversations as JSONL rows, written
    once under the cache dir (see `weaver.corpora.chitchat`)."""
    from weaver.corpora.chitchat import chitchat_file as write  # reads the package's JSON: only when used

    return write(cache_dir)


def safe_name(metric: str) -> str:
    """A metric name usable in a file name: `val/bleu` -> `val_bleu`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)


def optuna_direction(mode: str) -> str:
    """`monitor.mode` (max/min) as Optuna's study direction (maximize/minimize)."""
    directions = {"max": "maximize", "min": "minimize"}
    if mode not in directions:
        raise WeaverError(f"monitor.mode must be 'max' or 'min', got {mode!r}.")
    return directions[mode]


def optuna_seed(seed: int, storage: str, study_name: str) -> int:
    """The Optuna sampler's seed for one invocation of a search: the run's seed plus the trials its stored study
    already holds. A sampler seeded alike in every invocation would draw the first invocation's start-up trials again
    when a later one extends the study; this way the same command on the same stored study still draws the same."""
    import optuna

    try:
        held = len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:  # no such study yet
        held = 0
    return int(seed) + held


def sqlite_url(path: str) -> str:
    """`sqlite:///<path>` with the file's folder created: SQLite makes the file, not its folders."""
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(path).expanduser()}"


def sweep_group() -> str | None:
    """`${weaver.sweep_group:}`: in a multirun, the sweep's folder (`translation/2026-12-01/10-00-00`), so every
    job of one sweep joins one W&B group; None for a single run."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    return "/".join(sweep_dir.parts[-3:])


def default_precision(accelerator: str = "auto") -> str:
    """`${weaver.default_precision:cpu}` (`weaver.utils.hardware.default_precision`), imported when resolved: this
    module loads before Hydra sets up logging and must not load PyTorch and Lightning then (`--help` answers without
    them, and Lightning's loggers, loaded early, would keep their lines out of the run's log)."""
    from weaver.utils.hardware import default_precision as precision

    return precision(accelerator)


def register_resolvers() -> None:
    """Idempotent, so tests and every entry point can call it."""
    resolvers = {
        "weaver.resource": resource_path,
        "weaver.pretrained": pretrained_path,
        "weaver.safe_name": safe_name,
        "weaver.chitchat": chitchat_file,
        "weaver.optuna_direction": optuna_direction,
        "weaver.sqlite_url": sqlite_url,
        "weaver.optuna_seed": optuna_seed,
        "weaver.sweep_group": sweep_group,
        "weaver.default_precision": default_precision,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
