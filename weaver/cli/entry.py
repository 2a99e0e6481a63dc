"""The one `main()` every command-line tool shares: a Hydra app whose user errors end in a one-line message."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from weaver.config import config_dir, register_resolvers
from weaver.errors import ERROR_FILE, ConfigError, WeaverError

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


def check_flags(cfg: DictConfig, config_name: str) -> None:
    """A tool's true/false keys (`adapter_only`, `test`) given another value: `adapter_only=no` would read as true."""
    defaults = yaml.safe_load((config_dir() / f"{config_name}.yaml").read_text(encoding="utf-8"))
    for key, default in defaults.items():
        if isinstance(default, bool) and key in cfg and not isinstance(cfg[key], bool):
            raise ConfigError(f"{key} must be true or false, got {cfg[key]!r}.")


def imported_on_call(name: str) -> Callable[..., Any]:
    """The function `"module:function"` names, its module imported at the first call: a tool's `main()` composes
    the config (answering `--help`, a mistyped key or group option, an unset required key) in about a second,
    before PyTorch and Lightning load."""
    module, function = name.split(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        loaded = getattr(importlib.import_module(module), function)
        one_console_for_lightning()
        return loaded(*args, **kwargs)

    return call


def one_console_for_lightning() -> None:
    """Lightning, loaded after Hydra set up logging, passes its messages up to Hydra's handlers (the console and
    the run's log file), but its top package also prints each on a console handler of its own: that one goes."""
    lightning_logger = logging.getLogger("lightning")
    for handler in list(lightning_logger.handlers):
        lightning_logger.removeHandler(handler)


def sigterm_exception() -> type[BaseException]:
    """Lightning's exception for SIGTERM, imported only when something was raised (an `except` clause evaluates
    its expression then), so tools still answer before Lightning loads."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return SIGTERMException


def record_failure(message: str) -> None:
    """Why the job failed, in its run dir (tools without one, such as export.py, write nothing)."""
    hydra_config = HydraConfig.get()
    if hydra_config.output_subdir is None:
        return
    path = Path(hydra_config.runtime.output_dir) / ERROR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(message.splitlines()[0] if message else "", encoding="utf-8")


def entry_point(config_name: str, run: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A Hydra app on `conf/<config_name>.yaml` calling `run(cfg)` and returning its value (a sweeper's objective).

    A user error (`WeaverError`, an unset `???` key) exits with its one-line message instead of a traceback; in a
    multirun it is logged and raised again as one line, so the sweeper records that job as failed and goes on. A
    failed job's run dir keeps why in `run_info/error.txt` (what the sweep report shows). Stopped by SIGTERM
    (Lightning then finishes the batch and raises), the tool exits with 143, as a scheduler expects of a job it
    preempted.
    """

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    def hydra_main(cfg: DictConfig) -> Any:
        try:
            check_required_keys(cfg)
            check_flags(cfg, config_name)
            return run(cfg)
        except (WeaverError, MissingMandatoryValue) as error:
            message = user_message(error)
            record_failure(message)
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                log.error("Job %s failed: %s", HydraConfig.get().job.num, message)
                # Hydra prints a CompactHydraException's message alone, where it prints others' tracebacks.
                raise CompactHydraException(f"Job {HydraConfig.get().job.num} failed: {message}") from None
            print(f"Error: {message}", file=sys.stderr)
            sys.exit(1)
        except sigterm_exception():  # a SystemExit without a code: the job would end as a success
            print("Stopped by SIGTERM.", file=sys.stderr)
            sys.exit(143)
        except Exception as error:
            record_failure(f"{type(error).__name__}: {error}")
            raise

    def main() -> None:
        register_resolvers()
        hydra_main()

    return main
