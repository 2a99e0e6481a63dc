"""The progress bar: Lightning's Rich one."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """Lightning's Rich progress bar, reading "Epoch 3" where a run bounded by steps or time (`max_epochs=-1`, as
    Lightning sets it when `max_steps` is) would show "Epoch 3/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        if self.trainer.max_epochs == -1:  # no epoch total to count towards
            description = description.replace(f"Epoch {current_epoch}/-2", f"Epoch {current_epoch}", 1)
        return description
