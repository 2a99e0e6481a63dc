"""`hparams_search=<task>_optuna`: Hydra's Optuna sweeper over `train.py`, with a failing trial and a resumed study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from tests.helpers import TINY, run_cli
from weaver.config import config_dir, register_resolvers

# Three heads do not divide the tiny model's d_model=64: those trials fail; two do.
SEARCH = [
    "hparams_search=translation_optuna",
    "model.num_heads=choice(2,3)",
    "debug=fast",
    "monitor.metric=val/loss",
    "monitor.mode=min",
    "trainer.precision=32-true",
]


def study(cwd: Path) -> optuna.Study:
    storage = f"sqlite:///{cwd / 'multirun' / 'translation' / 'optuna.db'}"
    return optuna.load_study(study_name="translation_val_loss_min", storage=storage)


@pytest.mark.slow
def test_an_optuna_search_survives_a_failed_trial_and_extends_from_its_storage(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    data = f"data.data_dir={tiny_data_dir}"
    result = run_cli(*SEARCH, data, *TINY, "hydra.sweeper.n_trials=4", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study(tmp_path).trials
    states = [trial.state for trial in trials]
    assert len(trials) == 4
    assert optuna.trial.TrialState.FAIL in states and optuna.trial.TrialState.COMPLETE in states
    assert all(t.params["model.num_heads"] == 3 for t in trials if t.state == optuna.trial.TrialState.FAIL)
    # The best trial is reported and written down; its value is the run's best validation loss.
    (results,) = (tmp_path / "multirun" / "translation").glob("*/*/optimization_results.yaml")
    best = yaml.safe_load(results.read_text())
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert best["best_value"] == pytest.approx(min(t.value for t in completed))
    assert "Best value" in result.stdout + result.stderr
    assert "No trial of study" not in result.stdout + result.stderr  # said only where no trial has a result

    again = run_cli(*SEARCH, data, *TINY, "hydra.sweeper.n_trials=2", cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    extended = study(tmp_path).trials
    assert len(extended) == 6
    # The extension draws settings of its own, not the first command's first two trials again.
    assert [t.params for t in extended[4:]] != [t.params for t in extended[:2]]


def test_jobs_of_one_sweep_share_a_wandb_group() -> None:
    def group(*overrides: str) -> str | None:
        register_resolvers()
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg.logger.wandb.group

    sweep = "hydra.sweep.dir=multirun/dialogue/2026-12-01/10-00-00"
    try:
        assert group("hydra.mode=MULTIRUN", sweep, "hydra.job.num=0") == "dialogue/2026-12-01/10-00-00"
        assert group("hydra.mode=MULTIRUN", sweep, "hydra.job.num=1") == "dialogue/2026-12-01/10-00-00"
        assert group("hydra.mode=RUN", sweep) is None
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.slow
def test_a_trial_without_a_validation_fails_in_one_line(tiny_data_dir: Path, tmp_path: Path) -> None:
    # debug=fast validates at step 8: a trial of 2 steps has no value to report.
    unmeasured = [SEARCH[0], "trainer.max_steps=choice(2,3)", *SEARCH[2:], f"data.data_dir={tiny_data_dir}", *TINY]
    failed = run_cli(*unmeasured, "hydra.sweeper.n_trials=1", cwd=tmp_path)
    (error,) = (tmp_path / "multirun" / "translation").glob("*/*/0/run_info/error.txt")
    assert "monitor.metric=val/loss was never measured: no validation ran" in error.read_text()
    assert "Job 0 failed: monitor.metric=val/loss was never measured" in failed.stdout + failed.stderr
    assert study(tmp_path).trials[0].state == optuna.trial.TrialState.FAIL
    # The sweeper then stops on Optuna's "Record does not exist." (no best trial to report): said beforehand.
    assert "No trial of study 'translation_val_loss_min' has a result (1 failed;" in failed.stdout + failed.stderr


def test_each_monitored_metric_and_direction_has_its_own_study() -> None:
    """Another metric is another study: its values are not mixed with the stored study's, nor is its direction
    refused by it."""

    def study_name(*overrides: str) -> str:
        register_resolvers()
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=[SEARCH[0], *overrides], return_hydra_config=True)
        return cfg.hydra.sweeper.study_name

    assert study_name() == "translation_val_bleu_max"
    assert study_name("monitor.metric=val/loss", "monitor.mode=min") == "translation_val_loss_min"
    assert study_name("task=summarization") == "summarization_val_rougeL_max"
