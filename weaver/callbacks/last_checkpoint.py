"""`last.ckpt`: the checkpoint `resume=auto` continues from, holding the weights of the last step trained."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint without a monitor (one file, rewritten at every validation whatever the metric
    did), written once more when training ends past its last validation (`max_steps` or `max_time` between two
    validations), so the steps after it are not lost."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):  # skipped when this step is saved already
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
