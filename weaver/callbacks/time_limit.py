"""Stop at the validation that used up `trainer.max_time`, instead of validating again one step later."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info


class StopAtTimeLimitAfterValidation(Callback):
    """Lightning's Timer (what `trainer.max_time` sets up) reads the clock only after training batches, and a run
    stopped there validates once more before it ends. When a validation is what ran past the limit, that means a
    second validation of nearly the same weights one step later: minutes of a CPU run's budget. Here the run ends
    at the validation itself, as early stopping ends it; limits reached between validations are left to the
    Timer, whose final validation then scores the steps since the last one."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or trainer.should_stop:
            return
        timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is None:
            return
        if trainer.strategy.broadcast(remaining <= 0):  # every rank stops at the same step
            rank_zero_info(f"Time limit reached during validation at step {trainer.global_step}: stopping here.")
            trainer.should_stop = True
