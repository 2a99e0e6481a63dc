"""SIGTERM, or submitit's signal before a SLURM job's time limit, saves a checkpoint to resume from, at an optimizer
step's boundary."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from weaver.callbacks.preemption import CheckpointOnPreemption, submitit_signal


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


def preempted_trainer(signaller: L.Callback, folder: Path, **options: object) -> L.Trainer:
    """A bare CPU trainer with `signaller` (which signals at some batch) and the preemption callback saving to
    `folder`."""
    return L.Trainer(
        accelerator="cpu",
        callbacks=[signaller, CheckpointOnPreemption(str(folder))],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


@pytest.mark.parametrize(("signalled", "steps"), [(2, 2), (3, 2), (4, 3)])
def test_a_sigterm_inside_an_accumulation_window_stops_after_its_optimizer_step(
    signalled: int, steps: int, tmp_path: Path
) -> None:
    """Two micro-batches a step: batches 2 and 3 make step 2, so a SIGTERM at batch 2 waits for batch 3."""
    trainer = preempted_trainer(SigtermAt(signalled), tmp_path, max_steps=10, accumulate_grad_batches=2)
    with pytest.raises(SIGTERMException):
        trainer.fit(Task(), torch.utils.data.DataLoader(torch.randn(40, 2), batch_size=2))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == steps
    served = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
    assert served == 2 * steps  # no micro-batch counted as served whose gradient was not applied


class Requeue:
    """What submitit's handler of its signal does in a job: requeues the job (here: notes the step `last.ckpt`
    holds then), and ends the process."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.saved_steps: list[int | None] = []

    def __call__(self, signum: int, frame: object) -> None:
        saved = torch.load(self.checkpoint, weights_only=False) if self.checkpoint.is_file() else None
        self.saved_steps.append(saved and saved["global_step"])
        raise SystemExit(-1)


@pytest.fixture
def requeue(tmp_path: Path) -> Iterator[Requeue]:
    """Submitit's handler of its signal, as a job of Hydra's submitit launcher has it."""
    handler = Requeue(tmp_path / "last.ckpt")
    previous = signal.signal(submitit_signal(), handler)
    yield handler
    signal.signal(submitit_signal(), previous)


class SignalAt(L.Callback):
    """Submitit's signal sent to this process as the given batch starts, or (`None`) as training ends."""

    def __init__(self, batch_idx: int | None) -> None:
        self.batch_idx = batch_idx

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.fit_loop.epoch_loop.batch_idx == self.batch_idx:
            signal.raise_signal(submitit_signal())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.batch_idx is None:
            signal.raise_signal(submitit_signal())


@pytest.mark.parametrize(("signalled", "steps"), [(2, 2), (3, 2), (4, 3)])
def test_submitits_signal_saves_the_step_reached_before_submitit_requeues_the_job(
    signalled: int, steps: int, tmp_path: Path, requeue: Requeue
) -> None:
    """Before a SLURM job's time limit, submitit requeues it and exits at once: the callback stops training at the
    step's end as on SIGTERM, saves last.ckpt, then lets submitit's handler requeue and exit."""
    trainer = preempted_trainer(SignalAt(signalled), tmp_path, max_steps=10, accumulate_grad_batches=2)
    with pytest.raises(SystemExit) as stopped:
        trainer.fit(Task(), torch.utils.data.DataLoader(torch.randn(40, 2), batch_size=2))
    assert type(stopped.value) is SystemExit and stopped.value.code == -1  # submitit's exit
    assert requeue.saved_steps == [steps]
    assert signal.getsignal(submitit_signal()) is requeue


def test_submitits_signal_after_training_stops_looking_for_it_still_requeues(tmp_path: Path, requeue: Requeue) -> None:
    trainer = preempted_trainer(SignalAt(None), tmp_path, max_steps=3)
    with pytest.raises(SystemExit):
        trainer.fit(Task(), torch.utils.data.DataLoader(torch.randn(40, 2), batch_size=2))
    assert len(requeue.saved_steps) == 1
    assert signal.getsignal(submitit_signal()) is requeue
