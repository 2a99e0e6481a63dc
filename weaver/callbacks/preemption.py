"""Preemption: SIGTERM (SLURM, Kubernetes, spot instances) saves a checkpoint before the process exits; so does the
signal SLURM sends a job of Hydra's submitit launcher before its time limit, before submitit requeues the job."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any]


def submitit_signal() -> signal.Signals:
    """The signal submitit has SLURM send `signal_delay_s` before the time limit (`#SBATCH --signal=USR2@120`;
    `SUBMITIT_PREEMPT_SIGNAL` chooses another)."""
    from submitit import JobEnvironment  # where it is set, at import

    return signal.Signals[f"SIG{JobEnvironment.USR_SIG}"]


class CheckpointOnPreemption(Callback):
    """On SIGTERM, Lightning finishes the current batch and raises `SIGTERMException`; this writes `filename`
    (by default the `last.ckpt` that `resume=auto` continues from) in `dirpath` before the exit.

    In a submitit job, submitit's handler of `submitit_signal` requeues the job and ends the process at once,
    mid-step, so the requeued job would go back to its last validation. While training, this handles that signal
    as a SIGTERM instead, and hands it to submitit's handler once the checkpoint is written."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename
        self.deferred = False
        self.requeue: SignalHandler | None = None  # submitit's handler, while this callback stands in for it
        self.requeue_signal: signal.Signals | None = None  # set once that signal has come

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Not at fit start: Lightning notes the handlers it finds then, to put them back when fit ends, and must
        put back submitit's."""
        signum = submitit_signal()
        handler = signal.getsignal(signum)
        if callable(handler) and threading.current_thread() is threading.main_thread():
            self.requeue = handler
            signal.signal(signum, partial(self.stop, trainer))

    def stop(self, trainer: Trainer, signum: int, frame: FrameType | None) -> None:
        """Stops training as a SIGTERM does (in DDP, rank 0's flag stops every rank)."""
        self.requeue_signal = signal.Signals(signum)
        log.warning("%s: the job is requeued once last.ckpt is saved.", self.requeue_signal.name)
        trainer._signal_connector.received_sigterm = True

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
            stopped_by = (self.requeue_signal or signal.SIGTERM).name
            log.warning("%s at step %d: saved %s.", stopped_by, trainer.global_step, self.path)
        self.hand_back(trainer)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """The signal may come once training has stopped looking for it (in its last hooks): submitit gets it now."""
        self.hand_back(trainer)

    def hand_back(self, trainer: Trainer) -> None:
        """Gives submitit its handler back, and the signal if it came. Submitit's handler requeues the job and ends
        the process (locally, with the exit code on which its controller starts the job again), so the loggers are
        finalised first, as Lightning's own SLURM requeue does."""
        requeue, signum, self.requeue = self.requeue, self.requeue_signal, None
        if requeue is None:
            return
        signal.signal(submitit_signal(), requeue)
        if signum is not None:
            for logger in trainer.loggers:
                logger.finalize("failed")
            requeue(signum, None)
