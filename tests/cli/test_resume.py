"""`resume=auto` finds the run to continue; SIGTERM saves a checkpoint first (a SIGKILL: tests/reliability/)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from tests.helpers import LONG_TINY_RUN, TINY, announce_step, another_run_holding, run_cli, start, wait_for_line
from weaver.callbacks import FiniteModelCheckpoint
from weaver.cli.resume import apply_resume, find_unfinished_run, recorded_objective
from weaver.cli.train import train
from weaver.errors import ConfigError, TrainingDiverged
from weaver.report import find_runs


def fake_run(
    folder: Path, overrides: list[str], finished: bool = False, checkpoint: bool = True, sweep_job: bool = False
) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  mode: {'MULTIRUN' if sweep_job else 'RUN'}\n")
    if checkpoint:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    if finished:
        (folder / "metrics.json").write_text("{}")
    return folder


def test_resume_finds_the_newest_unfinished_run_of_the_same_command(tmp_path: Path) -> None:
    task = tmp_path / "outputs" / "translation"
    command = ["task=translation", "trainer.max_steps=40"]
    fake_run(task / "d1" / "t1", command, finished=True)
    older = fake_run(task / "d1" / "t2", [*command, "resume=auto"])
    fake_run(task / "d1" / "t3", ["task=translation", "trainer.max_steps=50"])
    fake_run(task / "d1" / "t4", command, checkpoint=False)
    current = task / "d2" / "t5"
    assert find_unfinished_run(current, [*command, "resume=auto", "hydra.run.dir=x"]) == older
    newer = fake_run(task / "d2" / "t0", list(reversed(command)))
    assert find_unfinished_run(current, command) == newer


def test_a_run_whose_continuation_finished_is_not_continued_again(tmp_path: Path) -> None:
    """Killed at t1, continued in t2 (killed too), then in t3, which finished: nothing of this command is left to
    continue, though t1 and t2 never wrote metrics.json."""
    task = tmp_path / "outputs" / "translation"
    command = ["task=translation", "trainer.max_steps=40"]
    killed = fake_run(task / "d1" / "t1", command)
    continuation = task / "d1" / "t2"
    cfg = OmegaConf.create({"resume": "auto", "ckpt_path": None, "paths": {"output_dir": str(continuation)}})
    apply_resume(cfg, [*command, "resume=auto"])
    assert (continuation / "run_info" / "resumed_from.txt").read_text() == f"{killed}\n"
    fake_run(continuation, command)
    assert find_unfinished_run(task / "d2" / "t9", command) == continuation
    last = fake_run(task / "d1" / "t3", command, finished=True)
    (last / "run_info").mkdir()
    (last / "run_info" / "resumed_from.txt").write_text(f"{continuation}\n")
    assert find_unfinished_run(task / "d2" / "t9", command) is None


def resume_config(output_dir: Path) -> DictConfig:
    return OmegaConf.create({"resume": "auto", "ckpt_path": None, "paths": {"output_dir": str(output_dir)}})


def test_a_sweep_job_continues_its_run_from_a_sweep_of_another_day(tmp_path: Path) -> None:
    """Sweep jobs sit one level deeper than single runs (`<date>/<time>/<job>`): a sweep stopped before midnight
    is found after it."""
    sweeps = tmp_path / "multirun" / "translation"
    command = ["task=translation", "optimizer.lr=0.001"]
    killed = fake_run(sweeps / "d1" / "t1" / "3", command, sweep_job=True)
    current = fake_run(sweeps / "d2" / "t2" / "0", command, checkpoint=False, sweep_job=True)
    cfg = resume_config(current)
    assert apply_resume(cfg, [*command, "resume=auto"]) is None
    assert cfg.ckpt_path == str(killed / "checkpoints" / "last.ckpt")


def test_a_sweep_run_again_skips_its_finished_jobs(tmp_path: Path) -> None:
    """Killed during job 1: run again, job 0 stands for its finished run, job 1 continues, job 2 starts."""
    sweeps = tmp_path / "multirun" / "translation"
    jobs = [["task=translation", f"optimizer.lr={lr}"] for lr in ("0.001", "0.002", "0.003")]
    done = fake_run(sweeps / "d1" / "t1" / "0", jobs[0], finished=True, sweep_job=True)
    killed = fake_run(sweeps / "d1" / "t1" / "1", jobs[1], sweep_job=True)
    sweep = sweeps / "d2" / "t2"
    again = [fake_run(sweep / str(n), job, checkpoint=False, sweep_job=True) for n, job in enumerate(jobs)]
    configs = [resume_config(job_dir) for job_dir in again]
    returned = [apply_resume(cfg, [*job, "resume=auto"]) for cfg, job in zip(configs, jobs, strict=True)]
    assert returned == [done, None, None]
    assert [cfg.ckpt_path for cfg in configs] == [None, str(killed / "checkpoints" / "last.ckpt"), None]


def test_a_sweep_job_continues_a_run_interrupted_after_its_command_finished(tmp_path: Path) -> None:
    """The newest run of a job's command decides: one interrupted after the finished one is continued."""
    sweeps = tmp_path / "multirun" / "translation"
    command = ["task=translation", "optimizer.lr=0.001"]
    fake_run(sweeps / "d1" / "t1" / "0", command, finished=True, sweep_job=True)
    killed = fake_run(sweeps / "d1" / "t2" / "0", command, sweep_job=True)
    current = fake_run(sweeps / "d1" / "t3" / "0", command, checkpoint=False, sweep_job=True)
    older = time.time() - 60
    os.utime(sweeps / "d1" / "t1" / "0" / "metrics.json", (older, older))
    cfg = resume_config(current)
    assert apply_resume(cfg, [*command, "resume=auto"]) is None
    assert cfg.ckpt_path == str(killed / "checkpoints" / "last.ckpt")


def test_a_finished_single_run_is_not_skipped(tmp_path: Path) -> None:
    """Outside a sweep, running a finished command again trains it afresh."""
    command = ["task=translation"]
    fake_run(tmp_path / "outputs" / "translation" / "d1" / "t1", command, finished=True)
    current = fake_run(tmp_path / "outputs" / "translation" / "d2" / "t2", command, checkpoint=False)
    cfg = resume_config(current)
    assert apply_resume(cfg, [*command, "resume=auto"]) is None and cfg.ckpt_path is None


def test_a_skipped_job_returns_the_objective_its_finished_run_returned(tmp_path: Path) -> None:
    """The best monitored score the checkpoint callback kept, as last.ckpt holds it; else metrics.json's value."""
    run = fake_run(tmp_path / "0", [], finished=True, checkpoint=False)
    (run / "metrics.json").write_text(json.dumps({"metrics": {"val/bleu": 21.0, "test/bleu": 19.0}}))
    assert recorded_objective(run, "val/bleu") == 21.0
    (run / "checkpoints").mkdir()
    callbacks = {
        "FiniteModelCheckpoint{'monitor': 'val/bleu'}": {"monitor": "val/bleu", "best_model_score": torch.tensor(30.0)}
    }
    torch.save({"callbacks": callbacks}, run / "checkpoints" / "last.ckpt")
    assert recorded_objective(run, "val/bleu") == 30.0
    (run / "metrics.json").write_text(json.dumps({"metrics": {"val/loss": float("nan")}}))
    with pytest.raises(TrainingDiverged):
        recorded_objective(run, "val/loss")


def test_a_continuation_keeps_the_best_score_of_the_run_it_continues(tmp_path: Path) -> None:
    """Resumed in a folder of its own, the checkpoint callback still knows the earlier run's best: a worse score
    is no new best, and the earlier run's files are never deleted."""
    earlier = FiniteModelCheckpoint(dirpath=tmp_path / "t1" / "checkpoints", monitor="val/bleu", mode="max")
    best = str(tmp_path / "t1" / "checkpoints" / "best.ckpt")
    earlier.best_k_models, earlier.best_model_path, earlier.kth_best_model_path = {best: torch.tensor(30.0)}, best, best
    earlier.best_model_score = earlier.kth_value = torch.tensor(30.0)
    continuation = FiniteModelCheckpoint(dirpath=tmp_path / "t2" / "checkpoints", monitor="val/bleu", mode="max")
    continuation.load_state_dict(earlier.state_dict())
    trainer = L.Trainer(logger=False, default_root_dir=tmp_path)
    assert continuation.best_model_score == 30.0 and continuation.best_model_path == best
    assert not continuation.check_monitor_top_k(trainer, torch.tensor(20.0))
    assert continuation.check_monitor_top_k(trainer, torch.tensor(31.0))
    assert not continuation._should_remove_checkpoint(trainer, best, str(tmp_path / "t2" / "checkpoints" / "b.ckpt"))


def test_resume_refuses_a_run_that_is_still_running(tmp_path: Path) -> None:
    command = ["task=translation", "trainer.max_steps=40"]
    running = fake_run(tmp_path / "outputs" / "translation" / "d1" / "t1", command)
    current = tmp_path / "outputs" / "translation" / "d2" / "t2"
    cfg = OmegaConf.create({"resume": "auto", "ckpt_path": None, "paths": {"output_dir": str(current)}})
    with another_run_holding(running) as holder, pytest.raises(ConfigError) as error:
        apply_resume(cfg, [*command, "resume=auto"])
    assert str(error.value) == (
        f"resume=auto: {running}, the latest unfinished run of this command, is still running (PID {holder.pid}); "
        "stop it first, or drop resume=auto to start afresh."
    )


def test_resume_on_another_node_continues_the_run_its_rank_zero_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A requeued two-node job: rank 0 has taken the run dir again by the time rank 1 looks for it."""
    command = ["task=translation", "trainer.max_steps=40"]
    running = fake_run(tmp_path / "outputs" / "translation" / "d1" / "t1", command)
    cfg = OmegaConf.create({"resume": "auto", "ckpt_path": None, "paths": {"output_dir": str(running)}})
    monkeypatch.setenv("NODE_RANK", "1")
    with another_run_holding(running):
        apply_resume(cfg, [*command, "resume=auto"])
    assert cfg.ckpt_path == str(running / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_a_continuation_that_validates_no_more_reports_the_last_validation(
    translation_checkpoint: Path, train_config: DictConfig, tmp_path: Path
) -> None:
    """As when a run is preempted during its test: its continuation (the same config) trains no further."""
    finished = translation_checkpoint.parent.parent
    first = json.loads((finished / "metrics.json").read_text())["metrics"]
    continued = train_config.copy()
    continued.test = False
    continued.ckpt_path = str(finished / "checkpoints" / "last.ckpt")
    continued.paths.output_dir = str(tmp_path / "continued")
    metrics, _ = train(continued)
    validation = {name: value for name, value in first.items() if name.startswith("val/")}
    assert {"val/loss", "val/bleu"} <= set(validation)
    assert {name: metrics[name] for name in validation} == pytest.approx(validation)
    written = json.loads((tmp_path / "continued" / "metrics.json").read_text())["metrics"]
    assert {name: written[name] for name in validation} == pytest.approx(validation)


@pytest.mark.slow
def test_sigterm_saves_a_loadable_checkpoint(tiny_data_dir: Path, tmp_path: Path) -> None:
    args = [f"data.data_dir={tiny_data_dir}", *LONG_TINY_RUN, "trainer.max_steps=100000", *announce_step(3)]
    process = start(args, tmp_path)
    wait_for_line(process, "step 3")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    (last,) = tmp_path.glob("outputs/translation/*/*/checkpoints/last.ckpt")
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] >= 3 and "weaver_config" in checkpoint


@pytest.mark.slow
def test_a_finished_sweep_run_again_with_resume_auto_trains_nothing(tiny_data_dir: Path, tmp_path: Path) -> None:
    sweep = ["-m", "optimizer.lr=0.001", "debug=fast", f"data.data_dir={tiny_data_dir}", *TINY, "resume=auto"]
    first = run_cli(*sweep, "trainer.precision=32-true", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_cli(*sweep, "trainer.precision=32-true", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "this job finished in" in again.stdout + again.stderr
    jobs = sorted((tmp_path / "multirun" / "translation").glob("*/*/0"))
    assert len(jobs) == 2 and (jobs[0] / "metrics.json").is_file() and not (jobs[1] / "checkpoints").exists()
    # The second sweep's report shows the run that stands for its job; the task's report, that run once.
    (skipped,) = find_runs(jobs[1].parent)
    assert skipped.path == jobs[0] and skipped.status == "finished" and f"finished in {jobs[0]}" in skipped.name
    assert [run.path for run in find_runs(tmp_path / "multirun" / "translation")] == [jobs[0]]
