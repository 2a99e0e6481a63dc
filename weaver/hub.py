"""The HuggingFace Hub: tell quickly whether it can be reached, so offline runs fail fast and clearly."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from unittest import mock
from urllib.parse import urlparse

from weaver.errors import ConfigError, WeaverError

T = TypeVar("T")

OFFLINE_HINT = (
    "The HuggingFace Hub is unreachable (no network, or HF_HUB_OFFLINE=1) and '{name}' is not in the local "
    "HuggingFace cache. {alternative}"
)


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the Hub endpoint: seconds, instead of the minutes of retries a download makes."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextmanager
def offline_mode() -> Iterator[None]:
    """Make `datasets` and `huggingface_hub` use only their local caches, without network retries."""
    import datasets
    from huggingface_hub import constants

    with (
        mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True),
        mock.patch.object(constants, "HF_HUB_OFFLINE", True),
    ):
        yield


def load_pretrained(load: Callable[[str], T], name_or_path: str, key: str, hint: str = "") -> T:
    """`load(name_or_path)` (a `from_pretrained`) from a local folder, or through the real Hub code path.

    Offline, only the local HuggingFace cache is tried, and an empty cache gives a message naming `key` and how to
    point it at a local folder (then `hint`) instead of minutes of download retries and a deep traceback.
    """
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        try:
            return load(str(folder))
        except WeaverError:  # the loader's own message, naming what is wrong with the folder
            raise
        except (OSError, ValueError) as error:  # transformers' way of saying the folder lacks what it looks for
            if (folder / "checkpoints").is_dir():
                what = (
                    f"a training run's folder: give one of its checkpoints ({folder / 'checkpoints' / 'last.ckpt'}) "
                    "or a folder export.py wrote from one"
                )
            else:
                what = f"not a folder saved with save_pretrained ({str(error).strip().splitlines()[0]})"
            raise ConfigError(f"{key}='{name_or_path}' is {what}{hint}.") from error
    if name_or_path.startswith(("/", "./", "../", "~")):  # a path, never a Hub id
        raise ConfigError(f"{key}='{name_or_path}' is not a folder: point it at one saved with save_pretrained{hint}.")
    reachable = hub_reachable()
    try:
        if reachable:
            return load(name_or_path)
        with offline_mode():
            return load(name_or_path)
    except OSError as error:
        if reachable:
            raise ConfigError(f"{key}='{name_or_path}' could not be loaded: {error}") from error
        alternative = f"Point {key} at a local folder saved with save_pretrained{hint}."
        raise ConfigError(OFFLINE_HINT.format(name=name_or_path, alternative=alternative)) from error
