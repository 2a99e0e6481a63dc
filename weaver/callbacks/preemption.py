"""Preemption: SIGTERM (SLURM, Kubernetes, spot instances) saves a checkpoint before the process exits."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class CheckpointOnPreemption(Callback):
    """On SIGTERM, Lightning finishes the current batch and raises `SIGTERMException`; this writes `filename`
    (by default the `last.ckpt` that `resume=auto` continues from) in `dirpath` before the exit."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.deferred = False

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """A SIGTERM inside a gradient-accumulation window waits for the window's optimizer step: a checkpoint
        taken mid-window would count its micro-batches as served while their gradients are lost, and the resumed
        step would take only the rest of its window. (Lightning reads its flag after this hook to stop the run.)"""
        signals = trainer._signal_connector
        if signals.received_sigterm and trainer.fit_loop.epoch_loop._should_accumulate():
            signals.received_sigterm, self.deferred = False, True
            log.warning("SIGTERM in a gradient-accumulation window: stopping after its optimizer step.")
        elif self.deferred:
            signals.received_sigterm, self.deferred = True, False

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == TrainerFn.FITTING:
            trainer.save_checkpoint(self.path)
            log.warning("SIGTERM at step %d: saved %s.", trainer.global_step, self.path)
