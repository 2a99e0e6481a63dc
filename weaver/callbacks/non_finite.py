"""A diverged run fails loudly: a non-finite loss stops training (or skips a few steps first), and a NaN score is
never the best checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim import Optimizer

from weaver.callbacks.checkpoints import ContinuedCheckpoint
from weaver.errors import ConfigError, TrainingDiverged

log = logging.getLogger(__name__)
ACTIONS = ("stop", "skip")


class NonFiniteLossGuard(Callback):
    """Checks every optimizer step's loss and gradients before the weights change.

    `action="stop"` ends the run at the first non-finite step with an error naming the step and the last good
    checkpoint. `action="skip"` drops that step's update (gradients cleared, so the optimizer leaves weights and
    moments as they were; the step and the learning-rate schedule still advance) up to `max_skips` times over the
    run, then stops as above.

    Safe under DDP and FSDP: the verdict is reduced over all ranks, so every rank skips or stops at the same step.
    (Returning None from `training_step`, Lightning's own way to skip, is refused in distributed training.) Under
    fp16's gradient scaler, overflowing gradients are the scaler's to skip: only the loss is checked.
    """

    def __init__(self, action: str = "stop", max_skips: int = 10) -> None:
        if action not in ACTIONS:
            raise ConfigError(f"callbacks.non_finite_guard.action must be one of {', '.join(ACTIONS)}, got {action!r}.")
        if isinstance(max_skips, bool) or not isinstance(max_skips, int) or max_skips < 0:
            raise ConfigError(f"callbacks.non_finite_guard.max_skips must be an integer >= 0, got {max_skips!r}.")
        self.action, self.max_skips = action, max_skips
        self.skipped = 0
        self.bad_loss: float | None = None  # this rank's non-finite loss in the step under way

    def state_dict(self) -> dict[str, int]:
        """The steps skipped so far, saved in checkpoints: `max_skips` bounds a resumed run's skips with them."""
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        # With gradient accumulation, every micro-batch's loss counts towards the step.
        if not torch.isfinite(loss).all():
            self.bad_loss = float(loss.detach().float().flatten()[0])

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        bad_loss, self.bad_loss = self.bad_loss, None
        if bad_loss is not None:
            what = f"the loss is {bad_loss}"
        elif not has_scaler(trainer) and not gradients_finite(optimizer):
            what = "the gradients are not finite"
        else:
            what = ""
        if trainer.strategy.reduce_boolean_decision(not what, all=True):
            return
        what = what or "another process's loss or gradients are not finite"
        step = trainer.global_step + 1  # the step about to be taken, counted from 1
        if self.action == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            optimizer.zero_grad(set_to_none=True)
            log.warning(
                "Step %d: %s; its update is skipped (%d of %d allowed).", step, what, self.skipped, self.max_skips
            )
            return
        skipped = f", after {self.skipped} skipped steps" if self.skipped else ""
        raise TrainingDiverged(
            f"Training diverged at step {step}: {what}{skipped}. {last_good_checkpoint(trainer)} Lower optimizer.lr "
            "(or set trainer.gradient_clip_val) and train again, or skip such steps with "
            "callbacks.non_finite_guard.action=skip."
        )


def has_scaler(trainer: Trainer) -> bool:
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def gradients_finite(optimizer: Optimizer) -> bool:
    checks = [
        p.grad.isfinite().all() for group in optimizer.param_groups for p in group["params"] if p.grad is not None
    ]
    return bool(torch.stack(checks).all()) if checks else True


def last_good_checkpoint(trainer: Trainer) -> str:
    """The newest checkpoint this run wrote: the guard stops before an update that is not finite, so every one
    holds finite weights."""
    paths = {
        Path(path)
        for callback in trainer.checkpoint_callbacks
        for path in (callback.best_model_path, callback.last_model_path)
        if path and Path(path).is_file()
    }
    if not paths:
        return "No checkpoint was written before it."
    return f"The last good checkpoint is {max(paths, key=lambda path: path.stat().st_mtime)}."


class FiniteModelCheckpoint(ContinuedCheckpoint):
    """Lightning's ModelCheckpoint, except that a NaN or infinite score is never saved as a best checkpoint
    (Lightning saves it as -inf while fewer than `save_top_k` are kept, so a diverged run would leave a "best"), and
    that a run continued in a folder of its own (`resume=auto`) keeps the best of the run it continues."""

    def check_monitor_top_k(self, trainer: Trainer, current: torch.Tensor | None = None) -> bool:
        if current is not None and not torch.isfinite(current):
            log.warning("%s is %s at step %d: no best checkpoint saved.", self.monitor, current, trainer.global_step)
            return False
        return super().check_monitor_top_k(trainer, current)
