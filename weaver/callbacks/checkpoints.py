"""Checkpoint callbacks that carry on across `resume=auto`, which continues a run in a folder of its own."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class ContinuedCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, keeping the best scores and checkpoints of the run it continues."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning keeps only `best_model_path` of a checkpoint saved in another folder, so the continuation's
        first validation would become its best however it scored, and its test would take that. The earlier run's
        files stay where they are: Lightning deletes no checkpoint outside this callback's folder."""
        super().load_state_dict({**state_dict, "dirpath": self.dirpath})


class LastCheckpoint(ContinuedCheckpoint):
    """`last.ckpt`, what `resume=auto` continues from: a checkpoint without a monitor (one file, rewritten at every
    validation whatever the metric did), written once more when training ends past its last validation
    (`max_steps` or `max_time` between two validations), so the steps after it are not lost."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):  # skipped when this step is saved already
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
