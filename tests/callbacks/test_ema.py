"""ExponentialMovingAverage: validation and checkpoints see the warmed-up average of the weights each step left,
training continues from the raw ones."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from weaver.callbacks import ExponentialMovingAverage, LastCheckpoint
from weaver.callbacks.ema import warmed_up_decay
from weaver.errors import ConfigError

DECAY = 0.5


class Task(L.LightningModule):
    """One weight, trained by SGD on a constant gradient, so each step's raw weight is known in advance."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("table", torch.arange(3.0))
        self.raw_weights: list[float] = []
        self.validated_weights: list[float] = []
        self.epoch_end_weights: list[float] = []  # where the task draws its sample heatmaps
        self.tested_weights: list[float] = []
        self.save_during_validation: Path | None = None  # as a SIGTERM in validation does

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return -self.weight.sum()

    def on_train_batch_end(self, outputs: object, batch: torch.Tensor, batch_idx: int) -> None:
        self.raw_weights.append(self.weight.item())

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.validated_weights.append(self.weight.item())
        if self.save_during_validation is not None:
            self.trainer.save_checkpoint(self.save_during_validation)
            self.save_during_validation = None

    def on_validation_epoch_end(self) -> None:
        self.epoch_end_weights.append(self.weight.item())

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.tested_weights.append(self.weight.item())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1.0)


def expected_average(raw_weights: list[float]) -> float:
    """The first step's weights copied, then each step's folded in at the warmed-up decay."""
    average = raw_weights[0]
    for num_averaged, weight in enumerate(raw_weights[1:], start=1):
        decay = warmed_up_decay(DECAY, num_averaged)
        average = decay * average + (1 - decay) * weight
    return average


def trainer_checkpoint(root: Path) -> Path:
    (path,) = (root / "checkpoints").glob("*.ckpt")
    return path


def test_decay_warms_up_then_holds() -> None:
    assert warmed_up_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_up_decay(0.999, 90) == pytest.approx(0.91)
    assert warmed_up_decay(0.999, 100_000) == 0.999


def test_validation_and_checkpoint_see_the_average_and_training_the_raw_weights(tmp_path: Path) -> None:
    task = Task()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        val_check_interval=3,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[ExponentialMovingAverage(decay=DECAY)],
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = torch.utils.data.DataLoader([torch.zeros(1)] * 6, batch_size=None)
    trainer.fit(task, train_dataloaders=data, val_dataloaders=torch.utils.data.DataLoader([torch.zeros(1)]))

    # SGD at rate 1 on a gradient of -1: the raw weight climbs by one a step, validation's swap notwithstanding.
    assert task.raw_weights == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert task.validated_weights == pytest.approx(
        [expected_average(task.raw_weights[:3]), expected_average(task.raw_weights)]
    )
    assert task.validated_weights[-1] < 6.0
    checkpoint = torch.load(trainer_checkpoint(tmp_path), weights_only=False)
    assert checkpoint["state_dict"]["weight"].item() == pytest.approx(expected_average(task.raw_weights))
    assert checkpoint["current_model_state"]["weight"].item() == 6.0
    assert torch.equal(checkpoint["state_dict"]["table"], torch.arange(3.0))

    # Testing the best checkpoint with the trainer that trained it, as train.py does, keeps the average.
    trainer.test(task, dataloaders=torch.utils.data.DataLoader([torch.zeros(1)]), ckpt_path="best", verbose=False)
    assert task.tested_weights == pytest.approx([expected_average(task.raw_weights)])

    # Resuming continues from the raw weights (7 after the sixth step's 6), the average from where it was.
    resumed = Task()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=7,
        limit_val_batches=0,
        logger=False,
        callbacks=[ExponentialMovingAverage(decay=DECAY)],
        default_root_dir=tmp_path / "resumed",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(resumed, train_dataloaders=data, ckpt_path=trainer_checkpoint(tmp_path))
    assert resumed.raw_weights == [7.0]
    assert resumed.weight.item() == pytest.approx(expected_average([*task.raw_weights, 7.0]))


def test_decay_outside_zero_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="callbacks.ema.decay must be in"):
        ExponentialMovingAverage(decay=1.0)


def test_sharded_strategies_are_refused_by_name() -> None:
    trainer = SimpleNamespace(strategy=FSDPStrategy.__new__(FSDPStrategy))
    with pytest.raises(ConfigError, match="hardware=fsdp"):
        ExponentialMovingAverage().setup(trainer, Task(), stage="fit")


def test_checkpoints_saved_in_validation_and_at_the_end_keep_raw_and_average_apart(tmp_path: Path) -> None:
    """A SIGTERM checkpoint during validation (the model then holds the average) and `last.ckpt` written when
    training ends (before the average is copied in) both keep the raw weights to continue from; the task's own
    validation epoch end, where sample heatmaps are drawn, sees the average that generated the samples."""
    task = Task()
    task.save_during_validation = tmp_path / "in_validation.ckpt"
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=7,  # not a multiple of val_check_interval: last.ckpt is written when training ends
        val_check_interval=3,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[ExponentialMovingAverage(decay=DECAY), LastCheckpoint(dirpath=tmp_path, filename="last")],
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = torch.utils.data.DataLoader([torch.zeros(1)] * 7, batch_size=None)
    trainer.fit(task, train_dataloaders=data, val_dataloaders=torch.utils.data.DataLoader([torch.zeros(1)]))

    assert task.epoch_end_weights == pytest.approx(task.validated_weights)
    for path, raw in ((tmp_path / "in_validation.ckpt", 3.0), (tmp_path / "last.ckpt", 7.0)):
        checkpoint = torch.load(path, weights_only=False)
        assert checkpoint["current_model_state"]["weight"].item() == raw, path.name
        average = expected_average(task.raw_weights[: int(raw)])
        assert checkpoint["state_dict"]["weight"].item() == pytest.approx(average), path.name
    assert task.weight.item() == pytest.approx(expected_average(task.raw_weights))  # after fit: the average
