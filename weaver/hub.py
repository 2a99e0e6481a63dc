"""The HuggingFace Hub: tell quickly whether it can be reached, so offline runs fail fast and clearly."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock
from urllib.parse import urlparse

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
