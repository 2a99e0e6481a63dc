"""SIGTERM saves a checkpoint to resume from, at an optimizer step's boundary."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from weaver.callbacks.preemption import CheckpointOnPreemption


class Task(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SigtermAt(L.Callback):
    """What Lightning's SIGTERM handler does, as the given batch starts."""

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.fit_loop.epoch_loop.batch_idx == self.batch_idx:
            trainer._signal_connector.received_sigterm = True


@pytest.mark.parametrize(("signalled", "steps"), [(2, 2), (3, 2), (4, 3)])
def test_a_sigterm_inside_an_accumulation_window_stops_after_its_optimizer_step(
    signalled: int, steps: int, tmp_path: Path
) -> None:
    """Two micro-batches a step: batches 2 and 3 make step 2, so a SIGTERM at batch 2 waits for batch 3."""
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=10,
        accumulate_grad_batches=2,
        callbacks=[SigtermAt(signalled), CheckpointOnPreemption(str(tmp_path))],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(SIGTERMException):
        trainer.fit(Task(), torch.utils.data.DataLoader(torch.randn(40, 2), batch_size=2))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == steps
    served = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
    assert served == 2 * steps  # no micro-batch counted as served whose gradient was not applied
