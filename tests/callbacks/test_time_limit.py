"""A validation that uses up `trainer.max_time` ends the run there, without a second validation a step later."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.demos.boring_classes import BoringModel

from weaver.callbacks import StopAtTimeLimitAfterValidation


class FakeClock(Timer):
    """A one-minute limit whose clock stands still until `validations` validations have run, or training reached
    `step`, then is far past it."""

    def __init__(self, validations: int | None = None, step: int | None = None) -> None:
        super().__init__(duration=timedelta(minutes=1))
        self.out_after, self.out_at_step, self.validations, self.step = validations, step, 0, 0

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        self.step = trainer.global_step
        super().on_train_batch_end(trainer, *args)

    def on_validation_end(self, trainer: Trainer, *args: Any) -> None:
        self.validations += not trainer.sanity_checking

    def time_elapsed(self, stage: str = "train") -> float:
        out = self.validations == self.out_after or (self.out_at_step is not None and self.step >= self.out_at_step)
        return 10**6 if out else 0.0


class Validations(Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_end(self, trainer: Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


def fit(*callbacks: Callback, tmp_path: Any) -> list[int]:
    validations = Validations()
    trainer = Trainer(
        max_steps=20,
        val_check_interval=3,
        limit_val_batches=1,
        callbacks=[*callbacks, validations],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    return validations.steps


@pytest.mark.parametrize(("stop_at_validation", "validated_at"), [(True, [3]), (False, [3, 4])])
def test_the_run_ends_at_the_validation_that_used_up_the_time(
    stop_at_validation: bool, validated_at: list[int], tmp_path: Any
) -> None:
    callbacks = [StopAtTimeLimitAfterValidation()] if stop_at_validation else []
    assert fit(FakeClock(validations=1), *callbacks, tmp_path=tmp_path) == validated_at  # Lightning alone: again at 4


def test_a_limit_reached_between_validations_is_left_to_the_timer(tmp_path: Any) -> None:
    # The clock runs out after step 4: Lightning stops there, validating the steps since the one at 3.
    assert fit(FakeClock(step=4), StopAtTimeLimitAfterValidation(), tmp_path=tmp_path) == [3, 4]
