"""The one `main()` every command-line tool shares: a Hydra app whose user errors end in a one-line message."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from weaver.config import config_dir, register_resolvers
from weaver.errors import ConfigError, WeaverError

log = logging.getLogger(__name__)


def required_message(key: str) -> str:
    return f"{key} is required: add {key}=... to the command."


def user_message(error: Exception) -> str:
    if isinstance(error, MissingMandatoryValue):  # a `???` key left unset
        return required_message(error.full_key)
    return str(error)


def check_required_keys(cfg: DictConfig) -> None:
    """A tool's own `???` keys (`ckpt_path`) are named before its code, PyTorch and Lightning load."""
    for key in cfg:
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(required_message(str(key)))


def imported_on_call(name: str) -> Callable[..., Any]:
    """The function `"module:function"` names, its module imported at the first call: a tool's `main()` composes
    the config (answering `--help`, a mistyped key or group option, an unset required key) in about a second,
    before PyTorch and Lightning load."""
    module, function = name.split(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    return call


def entry_point(config_name: str, run: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A Hydra app on `conf/<config_name>.yaml` calling `run(cfg)` and returning its value (a sweeper's objective).

    A user error (`WeaverError`, an unset `???` key) exits with its one-line message instead of a traceback; in a
    multirun it is logged and re-raised, so the sweeper records that job as failed and goes on.
    """

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    def hydra_main(cfg: DictConfig) -> Any:
        try:
            check_required_keys(cfg)
            return run(cfg)
        except (WeaverError, MissingMandatoryValue) as error:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                log.error("Job %s failed: %s", HydraConfig.get().job.num, user_message(error))
                raise
            print(f"Error: {user_message(error)}", file=sys.stderr)
            sys.exit(1)

    def main() -> None:
        register_resolvers()
        hydra_main()

    return main
