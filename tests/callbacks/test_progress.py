"""The progress bar counts epochs towards a total only where there is one."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from weaver.callbacks import ProgressBar


@pytest.mark.parametrize(
    ("limits", "description"),
    [({"max_steps": 10, "max_epochs": -1}, "Epoch 3"), ({"max_epochs": 5}, "Epoch 3/4")],  # the first: conf/trainer
)
def test_the_epoch_total_is_shown_only_where_epochs_bound_the_run(
    limits: dict[str, int], description: str, tmp_path: Path
) -> None:
    bar = ProgressBar()
    trainer = L.Trainer(callbacks=[bar], logger=False, default_root_dir=tmp_path, enable_checkpointing=False, **limits)
    bar.setup(trainer, None, "fit")
    assert bar._get_train_description(3).strip() == description
