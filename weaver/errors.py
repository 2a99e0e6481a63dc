"""Errors meant for the person at the keyboard: the entry points print them without a traceback."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

# Where a failed job's run dir keeps why (its one-line message), for the sweep report.
ERROR_FILE = "run_info/error.txt"
# Where a sweep job that `resume=auto` found finished already names the run that stands for it, for the report.
FINISHED_IN = "run_info/finished_in.txt"


class WeaverError(Exception):
    """A problem the user can fix (a config value, a file, a column): the message says what and how."""


class ConfigError(WeaverError, ValueError):
    """A config value is invalid; the message names the key."""


class DataError(WeaverError):
    """Input data cannot be used as configured; the message names the file, split or column."""


class TrainingDiverged(WeaverError):
    """The loss, the gradients or the monitored metric stopped being finite numbers; the message names the step."""


def require_checkpoint(path: object, key: str = "ckpt_path") -> None:
    """A checkpoint the command cannot go on without: unset, `key` is named with what to give it."""
    if not path:
        raise ConfigError(f"{key} is required: add {key}=<a .ckpt file in a run's checkpoints/> to it.")


def require_positive_int(key: str, value: object) -> None:
    """A count a config sets (`batch_size`, `model.memory.top_k`): an int of at least 1, and not a bool."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}.")


def checkpoint_file(path: str | Path | None, key: str = "ckpt_path") -> Path:
    """`path`, checked without reading it whole (nor loading PyTorch): a file, and a complete zip archive, as
    `torch.save` writes (a truncated one lacks the directory at its end)."""
    require_checkpoint(path, key)
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}='{path}' is not a file.")
    if not zipfile.is_zipfile(path):
        raise unreadable_checkpoint(path, key, "it is no complete zip archive")
    return path


def unreadable_checkpoint(path: Path, key: str, why: str) -> ConfigError:
    return ConfigError(
        f"{key}='{path}' is not a readable checkpoint (truncated, or not a checkpoint at all: {why}). Give a .ckpt "
        "file from a run's checkpoints/ folder."
    )


def call_naming_refusals(
    key: str, refused: tuple[type[Exception], ...], factory: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """`factory(*args, **kwargs)` for the config node `key`: an exception of a `refused` type (the target turning
    down a value: trainer.max_steps=-5, optimizer.lr=-1) becomes a ConfigError naming the node, instead of a
    traceback from inside the library. Our own errors already name their key and pass through as they are."""
    try:
        return factory(*args, **kwargs)
    except WeaverError:
        raise
    except refused as error:  # on one line, though the message has several (OmegaConf's give the full key below)
        raise ConfigError(f"{key}: {' '.join(str(error).split())} (check the values under '{key}')") from error


def dataclass_values(cls: type, values: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``values`` for the config dataclass ``cls`` found under ``key``: a key it does not have is a ConfigError
    listing the ones it has, not a TypeError from its constructor."""
    check_known_keys(values, {field.name for field in fields(cls)}, key)
    return dict(values)


def check_known_keys(values: Mapping[str, Any], known: set[str], key: str) -> None:
    """A key of ``values`` (the node at ``key``) outside ``known`` is a ConfigError listing the known ones."""
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {unknown}; known keys are {sorted(known)}")
