"""The one `main()` every command-line tool shares: a Hydra app whose user errors end in a one-line message."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from weaver.config import config_dir, register_resolvers
from weaver.errors import WeaverError

log = logging.getLogger(__name__)


def user_message(error: Exception) -> str:
    if isinstance(error, MissingMandatoryValue):  # a `???` key left unset
        return f"{error.full_key} is required: add {error.full_key}=... to the command."
    return str(error)


def entry_point(config_name: str, run: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A Hydra app on `conf/<config_name>.yaml` calling `run(cfg)` and returning its value (a sweeper's objective).

    A user error (`WeaverError`, an unset `???` key) exits with its one-line message instead of a traceback; in a
    multirun it is logged and re-raised, so the sweeper records that job as failed and goes on. SIGTERM, after
    the preemption callback saved `last.ckpt`, exits with 143 and says how to continue.
    """

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")
    def hydra_main(cfg: DictConfig) -> Any:
        try:
            return run(cfg)
        except (WeaverError, MissingMandatoryValue) as error:
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                log.error("Job %s failed: %s", HydraConfig.get().job.num, user_message(error))
                raise
            print(f"Error: {user_message(error)}", file=sys.stderr)
            sys.exit(1)
        except SIGTERMException:
            print("Stopped by SIGTERM after saving last.ckpt; run the same command with resume=auto to continue.")
            sys.exit(143)

    def main() -> None:
        register_resolvers()
        hydra_main()

    return main
