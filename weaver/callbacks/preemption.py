"""Preemption: SIGTERM (SLURM, Kubernetes, spot instances) saves a checkpoint before the process exits."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class CheckpointOnPreemption(Callback):
    """On SIGTERM, Lightning finishes the current batch and raises `SIGTERMException`; this writes `filename`
    (by default the `last.ckpt` that `resume=auto` continues from) in `dirpath` before the exit."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == TrainerFn.FITTING:
            trainer.save_checkpoint(self.path)
            log.warning("SIGTERM at step %d: saved %s.", trainer.global_step, self.path)
