"""Logger factories where the stock Lightning classes need a decision made first."""

from __future__ import annotations

import csv
import logging
import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

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


class ContinuingCSVLogger(CSVLogger):
    """Lightning's CSV logger, except in a run continued from the checkpoint `continued_from` in its own folder (a
    requeued SLURM job, `resume=auto` with a fixed `hydra.run.dir`): there Lightning's would delete the rows logged
    before the interruption, and this one keeps them."""

    def __init__(self, *args: Any, continued_from: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.continued_from = continued_from

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer = KeptRowsWriter if self.continued_from else ExperimentWriter
            self._experiment = writer(log_dir=self.log_dir)
        return self._experiment


class KeptRowsWriter(ExperimentWriter):
    """Appends to the folder's `metrics.csv`, less its rows from the first step the continuation logs on (those
    after the checkpoint, which it logs again)."""

    def _check_log_dir_exists(self) -> None:
        self.earlier: list[dict[str, str]] = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.earlier = list(csv.DictReader(file))

    def save(self) -> None:
        if self.earlier and self.metrics:
            first = min(int(row["step"]) for row in self.metrics)
            self.metrics = [row for row in self.earlier if int(float(row["step"])) < first] + self.metrics
            self.earlier = []
            self._fs.rm_file(self.metrics_file_path)
        super().save()
