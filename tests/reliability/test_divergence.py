"""A diverged run fails loudly: it stops naming the step, and no NaN is ever reported as a good score."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader

from tests.helpers import TINY, run_cli_in_process
from weaver.callbacks import FiniteModelCheckpoint, NonFiniteLossGuard
from weaver.cli.train import objective, train
from weaver.errors import TrainingDiverged


class LossGoesNaN(L.LightningModule):
    """A linear model whose loss is NaN at the given batches."""

    def __init__(self, nan_batches: set[int]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.nan_batches = nan_batches

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch).pow(2).mean()
        return loss * float("nan") if batch_idx in self.nan_batches else loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=0.1)


def fit(guard: NonFiniteLossGuard, model: L.LightningModule, tmp_path: Path, steps: int = 4) -> None:
    trainer = L.Trainer(
        max_steps=steps, callbacks=[guard], logger=False, enable_checkpointing=False, default_root_dir=tmp_path
    )
    trainer.fit(model, DataLoader(torch.randn(steps, 4), batch_size=1))


def test_the_guard_stops_at_the_first_non_finite_loss_naming_the_step(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match=r"Training diverged at step 2: the loss is nan\. No checkpoint"):
        fit(NonFiniteLossGuard(action="stop"), LossGoesNaN({1}), tmp_path)


def test_skip_leaves_the_weights_as_they_were_and_training_goes_on(tmp_path: Path) -> None:
    model = LossGoesNaN({1, 2})
    guard = NonFiniteLossGuard(action="skip", max_skips=2)
    fit(guard, model, tmp_path)
    assert guard.skipped == 2 and torch.isfinite(model.layer.weight).all()


def test_skip_stops_once_its_allowance_is_spent(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match="at step 3: the loss is nan, after 1 skipped steps"):
        fit(NonFiniteLossGuard(action="skip", max_skips=1), LossGoesNaN({1, 2}), tmp_path)


def test_skips_spent_before_a_resume_count_against_the_allowance(tmp_path: Path) -> None:
    model, guard = LossGoesNaN({1}), NonFiniteLossGuard(action="skip", max_skips=1)
    trainer = L.Trainer(max_steps=2, callbacks=[guard], logger=False, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(torch.randn(4, 4), batch_size=1))
    trainer.save_checkpoint(tmp_path / "skipped_once.ckpt")
    resumed = NonFiniteLossGuard(action="skip", max_skips=1)
    trainer = L.Trainer(max_steps=4, callbacks=[resumed], logger=False, default_root_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match="at step 4: the loss is nan, after 1 skipped steps"):
        trainer.fit(
            LossGoesNaN({3}), DataLoader(torch.randn(4, 4), batch_size=1), ckpt_path=tmp_path / "skipped_once.ckpt"
        )


def test_a_nan_score_is_never_the_best_checkpoint(tmp_path: Path) -> None:
    callback = FiniteModelCheckpoint(dirpath=tmp_path, monitor="val/bleu", mode="max")
    trainer = L.Trainer(logger=False, default_root_dir=tmp_path)
    assert not callback.check_monitor_top_k(trainer, torch.tensor(float("nan")))
    assert callback.check_monitor_top_k(trainer, torch.tensor(0.0))


def diverging(train_config: DictConfig, *removed: str) -> DictConfig:
    """The tiny run with a learning rate no model survives, less the callbacks named."""
    with open_dict(train_config):
        train_config.optimizer.lr = 1e6
        for name in removed:
            del train_config.callbacks[name]
    return train_config


def test_a_diverged_run_stops_before_writing_a_best_checkpoint_or_metrics(train_config: DictConfig) -> None:
    with pytest.raises(
        TrainingDiverged, match=r"Training diverged at step \d+: the (loss is nan|gradients are not finite)"
    ):
        train(diverging(train_config))
    run_dir = Path(train_config.paths.output_dir)
    assert not list(run_dir.glob("checkpoints/step*.ckpt")) and not (run_dir / "metrics.json").exists()


def test_unguarded_a_diverged_run_scores_nan_and_a_sweep_sees_a_failed_trial(train_config: DictConfig) -> None:
    cfg = diverging(train_config, "non_finite_guard", "early_stopping")
    metrics, objects = train(cfg)
    assert all(torch.isnan(torch.tensor(metrics[name])) for name in ("val/loss", "val/ppl", "val/bleu", "test/loss"))
    assert not list(Path(cfg.paths.output_dir).glob("checkpoints/step*.ckpt"))
    with pytest.raises(TrainingDiverged, match="val/bleu is nan: the run diverged"):
        objective(cfg, metrics, objects["trainer"])


def test_a_diverged_command_exits_with_the_step_and_reports_no_metric(tiny_data_dir: Path, tmp_path: Path) -> None:
    args = ["optimizer.lr=1e6", "debug=fast", "trainer.max_steps=30", f"data.data_dir={tiny_data_dir}", *TINY]
    result = run_cli_in_process(*args, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(r"^Error: Training diverged at step \d+: .*\. (No checkpoint|The last good)", result.stderr, re.M)
    assert not list(tmp_path.glob("outputs/translation/*/*/metrics.json"))
