"""Logger factories where the stock Lightning classes need a decision made first."""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def build_wandb_logger(offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """A W&B logger that works without an account: offline (sync later) unless an API key is configured."""
    if offline is None:
        offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_api_key_configured()
        if offline:
            log.info("No W&B API key configured: logging offline; upload later with `wandb sync`.")
    Path(kwargs.get("save_dir") or ".").mkdir(parents=True, exist_ok=True)
    return WandbLogger(offline=offline, **kwargs)
