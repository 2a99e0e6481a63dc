"""Exponential moving average of the weights, with the decay warmed up so early validations are not dominated by
the random initialisation."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.trainer.states import TrainerFn

from weaver.errors import ConfigError


def warmed_up_decay(decay: float, num_averaged: int) -> float:
    """TensorFlow's `ExponentialMovingAverage(num_updates=...)` schedule: min(decay, (1 + n) / (10 + n)).

    A fixed decay of 0.999 would still give the initial weights 37% of the average after 1,000 steps; this one
    averages over roughly the last n / 9 steps until that horizon reaches 1 / (1 - decay)."""
    return min(decay, (1 + num_averaged) / (10 + num_averaged))


class ExponentialMovingAverage(WeightAveraging):
    """Validation, the saved checkpoints (their `state_dict`), and so testing, prediction and export use the averaged
    weights; training continues from the raw ones (Lightning's `WeightAveraging` swaps them around validation and
    keeps both in checkpoints for resuming). Buffers (positional tables) are copied, not averaged."""

    def __init__(self, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay must be in (0, 1), got {decay}.")
        self.decay = decay
        self.swapped = False  # whether the model holds the average (during validation)
        super().__init__(use_buffers=False, multi_avg_fn=self._average)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, (DeepSpeedStrategy, FSDPStrategy)):
            raise ConfigError(
                "callbacks.ema keeps a whole copy of the weights on each device, which sharded strategies "
                "(hardware=fsdp, hardware=deepspeed) do not support: use it with hardware=cpu, gpu or ddp."
            )
        # The tasks' configure_model only compiles (nothing is sharded), so Lightning's warning that it might does
        # not apply.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*doesn't support sharding model layers")
            super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Only resuming training brings the raw weights back. Testing the best checkpoint after `fit` (the callback
        still holds its average then) keeps the averaged `state_dict` the checkpoint was chosen by."""
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        self.swapped = self._average_model is not None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The swap back waits for `on_validation_end`: Lightning calls callbacks' epoch-end hooks before the
        module's, whose sample heatmaps must come from the averaged weights that generated the samples."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.swapped:
            self._swap_models(pl_module)
            self.swapped = False

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The average is copied into the model at `on_fit_end` instead: `last.ckpt`, saved at the end of training
        after this hook, must keep the raw weights to continue from."""

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            self._copy_average_to_current(pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Saved during validation (SIGTERM then), the model holds the average and the averaged copy the raw
        weights: they go back to their places in the checkpoint."""
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self.swapped and "current_model_state" in checkpoint:
            checkpoint["state_dict"], checkpoint["current_model_state"] = (
                checkpoint["current_model_state"],
                checkpoint["state_dict"],
            )

    def _average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        weight = warmed_up_decay(self.decay, int(num_averaged))
        torch._foreach_lerp_(averaged, current, 1.0 - weight)
