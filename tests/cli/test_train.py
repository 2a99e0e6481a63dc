"""`train(cfg)` end to end on tiny data, and the `python train.py` command line as a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from tests.conftest import SHORT_TRAINING, compose_config, tiny_run_config
from tests.helpers import ROOT, TINY, run_cli, run_cli_in_process
from weaver.cli.train import absolute_model_paths, train
from weaver.errors import ConfigError
from weaver.instantiate import check_trainer_values
from weaver.utils import hardware


def test_train_writes_checkpoint_predictions_and_metrics(train_config: DictConfig) -> None:
    metrics, objects = train(train_config)
    run_dir = Path(train_config.paths.output_dir)
    assert {"val/bleu", "val/chrf", "val/loss", "test/bleu", "test/chrf", "test/loss"} <= set(metrics)
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert any(c.name == "last.ckpt" for c in checkpoints) and len(checkpoints) >= 2
    checkpoint = torch.load(checkpoints[0], map_location="cpu", weights_only=True)  # nothing pickled
    assert checkpoint["weaver_config"]["model"]["d_model"] == 64
    predictions = [json.loads(line) for line in (run_dir / "test_predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 24
    assert set(predictions[0]) == {"id", "source", "reference", "hypothesis"}
    assert json.loads((run_dir / "metrics.json").read_text())["signatures"]["bleu"].startswith("nrefs:1")
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()
    samples = [json.loads(line) for f in sorted((run_dir / "samples").glob("*.jsonl")) for line in f.open()]
    assert len(samples) == 10 and set(samples[0]) == {"id", "source", "reference", "hypothesis"}  # 5 per validation


def test_a_run_without_loggers_ends_with_last_ckpt_at_its_final_step(tiny_data_dir: Path, tmp_path: Path) -> None:
    """`logger=none` needs no learning-rate monitor's logger, and a run stopping between two validations (step 5,
    validations at 3 and 6) still leaves its final weights in last.ckpt."""
    cfg = tiny_run_config(
        [f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING, "logger=none", "trainer.max_steps=5", "test=false"],
        tmp_path,
    )
    train(cfg)
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5


def test_two_runs_with_one_seed_in_one_process_train_the_same_weights(tiny_data_dir: Path, tmp_path: Path) -> None:
    """In-process sweep trials: the first run in a process also measures the machine's peak FLOP/s (for MFU), which
    must not move the random draws (dropout masks) that run's training makes."""
    hardware.measured_matmul_flops.cache_clear()
    weights = []
    for run in ("first", "second"):
        overrides = [f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING, "trainer.max_steps=2", "test=false"]
        _, objects = train(tiny_run_config(overrides, tmp_path / run))
        weights.append(objects["model"].state_dict())
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


@pytest.mark.slow
def test_command_line_debug_run_writes_one_output_dir(tiny_data_dir: Path, tmp_path: Path) -> None:
    result = run_cli("debug=fast", f"data.data_dir={tiny_data_dir}", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "translation").glob("*/*")
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert (run_dir / "test_predictions.jsonl").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    # Lightning's messages reach the console once and the run's log file too.
    assert (result.stdout + result.stderr).count("GPU available:") == 1
    assert "GPU available:" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_multirun_sweeps_a_model_setting(tiny_data_dir: Path, tmp_path: Path) -> None:
    result = run_cli_in_process(
        "-m",
        "debug=fast",
        "model.num_encoder_layers=1,2",
        f"data.data_dir={tiny_data_dir}",
        *TINY,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "multirun" / "translation").glob("*/*/[0-9]*"))
    assert [r.name for r in runs] == ["0", "1"]
    assert all((r / "metrics.json").is_file() for r in runs)
    # The sweep report, from the run folders alone.
    sweep = runs[0].parent
    result = subprocess.run(
        [sys.executable, "-m", "weaver.report", str(sweep)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Best run:" in result.stdout and "model.num_encoder_layers" in result.stdout
    assert (sweep / "report" / "curves.png").is_file()
    assert (sweep / "report" / "best_by_model.num_encoder_layers.png").is_file()


def test_a_sweeps_refused_jobs_fail_in_one_line_each_and_the_report_says_why(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    result = run_cli_in_process(
        "-m", "debug=fast", "optimizer.lr=-1,-2", f"data.data_dir={tiny_data_dir}", *TINY, cwd=tmp_path
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Job 0 failed: optimizer: Invalid learning rate: -1 (check the values under 'optimizer')" in result.stderr
    runs = sorted((tmp_path / "multirun" / "translation").glob("*/*/[0-9]*"))
    assert [(run / "run_info" / "error.txt").read_text() for run in runs] == [
        f"optimizer: Invalid learning rate: {lr} (check the values under 'optimizer')" for lr in (-1, -2)
    ]
    report = subprocess.run(
        [sys.executable, "-m", "weaver.report", str(runs[0].parent)], capture_output=True, text=True, timeout=120
    )
    assert report.stdout.count("failed") >= 4  # the status column, and a line saying why per run


def test_help_lists_the_config_groups(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0
    groups = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert "translation" in groups["task"] and "cpu" in groups["hardware"]


def test_slurm_launcher_composes_without_a_cluster(tmp_path: Path) -> None:
    result = run_cli("launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["partition"], launcher["max_num_timeout"], launcher["nodes"]) == ("gpu", 3, 1)


def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    result = run_cli("--cfg", "job", "model=weaver_base", cwd=tmp_path, timeout=120)
    assert result.returncode == 0
    assert "d_model: 512" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.train_file=/no/such/file.jsonl"], "data.train_file: file not found: '/no/such/file.jsonl'"),
        (["data.target_field=fr"], "data.target_field='fr': no column 'fr'"),
        (["data=wmt16_de_en"], "HuggingFace Hub is unreachable"),
        (["data.max_source_length=0"], "data.max_source_length must be a positive integer, got 0"),
        (["task=nope"], "Could not find 'task/nope'"),
        (["model=nope"], "Could not find 'model/nope'"),
        (["peft=nope"], "Could not find 'peft/nope'"),
        (["model=hf_causal_lm"], "tokenizer.name_or_path is not set: point it, or model.name_or_path, at a folder"),
        (
            ["model=hf_causal_lm", "model.name_or_path=gpt2"],
            "Hub is unreachable (no network, or HF_HUB_OFFLINE=1) and 'gpt2'",
        ),
        (
            ["model=gpt2_small_scratch", "model.prompt_template=Translate:"],
            "model.prompt_template='Translate:' must hold {source} exactly once",
        ),
        (["resume=yes"], "resume must be 'auto' or null, got 'yes'"),
        (["model=t5_small"], "Hub is unreachable (no network, or HF_HUB_OFFLINE=1) and 't5-small' is not in the local"),
        (["monitor.mode=maximum"], "monitor.mode must be 'max' or 'min', got 'maximum'"),
        (["monitor.metric=val/BLEU"], "monitor.metric='val/BLEU' is not a metric this task logs; use one of: val/loss"),
        (["monitor.metric=val/loss"], "monitor.metric='val/loss' is lower for a better model: add monitor.mode=min."),
        (["trainer.max_steps=-5"], "trainer: `max_steps` must be a non-negative integer or -1"),
        (["trainer.precision=bf17"], "trainer: Precision 'bf17' is invalid"),
        (["trainer.val_check_interval=0"], "Error: trainer.val_check_interval=0 must be > 0."),
        (["scheduler.num_warmup_steps=-3"], "Error: scheduler.num_warmup_steps must be a whole number >= 0, got -3"),
        (["optimizer.lr=abc", "debug=fast"], "Error: optimizer.lr='abc': expected a number."),
        (["trainer.max_steps=abc"], "Error: trainer.max_steps='abc': expected an integer."),
        (["trainer.max_steps=1.5"], "Error: trainer.max_steps=1.5: expected an integer."),
        (["callbacks.early_stopping.patience=x"], "Error: callbacks.early_stopping.patience='x': expected an integer."),
        (["tokenizer.vocab_size=abc", "model=weaver_small"], "Error: tokenizer.vocab_size='abc': expected an integer."),
        (["seed=abc"], "seed must be an integer, got 'abc'."),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path='/no/such.ckpt' is not a file."),
    ],
)
def test_bad_input_gives_a_short_error(tmp_path: Path, overrides: list[str], message: str) -> None:
    result = run_cli_in_process(*overrides, "logger=csv", cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"accumulate_grad_batches": 0}, "trainer.accumulate_grad_batches=0 must be > 0."),
        ({"val_check_interval": 0.0}, "trainer.val_check_interval=0.0 must be > 0."),
        ({"check_val_every_n_epoch": 0}, "trainer.check_val_every_n_epoch=0 must be > 0."),
        ({"log_every_n_steps": -1}, "trainer.log_every_n_steps=-1 must be >= 0 (0: none)."),
        ({"gradient_clip_val": -1.0}, "trainer.gradient_clip_val=-1.0 must be >= 0 (0: none)."),
    ],
)
def test_trainer_values_lightning_would_divide_by_are_refused_before_it_starts(values: dict, message: str) -> None:
    node = OmegaConf.create({"max_steps": 10, "log_every_n_steps": 0, "gradient_clip_val": 0, **values})
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        check_trainer_values(node)
    check_trainer_values(OmegaConf.create({"log_every_n_steps": 0, "gradient_clip_val": 0, "val_check_interval": 0.5}))


def test_a_model_named_by_a_relative_path_is_recorded_by_its_absolute_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that the run's checkpoints find it from any directory (eval.py, predict.py, export.py)."""
    (tmp_path / "exp_base").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["model=weaver_pretrained", "model.init_from=exp_base"])
    absolute_model_paths(cfg)
    assert cfg.model.init_from == cfg.tokenizer.name_or_path == str(tmp_path / "exp_base")
    hub = compose_config(["model=t5_small"])
    absolute_model_paths(hub)
    assert hub.model.name_or_path == "t5-small"  # a Hub id, not a folder here
    absolute_model_paths(compose_config(["model=weaver_pretrained"]))  # init_from unset: left to be named later


PRESETS = sorted(path.stem for path in (ROOT / "conf" / "generation").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_generation_preset_decodes_validation_and_test(preset: str, tiny_data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_run_config(
        [f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING, f"generation={preset}", "generation.max_new_tokens=8"],
        tmp_path,
    )
    metrics, _ = train(cfg)
    assert {"val/bleu", "test/bleu"} <= set(metrics)
    predictions = (Path(cfg.paths.output_dir) / "test_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 24  # one output per test source, however many were sampled
