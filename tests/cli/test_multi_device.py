"""`trainer.devices=2` on the CPU: DDP over gloo, one run dir, files written once, metrics of one device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import TINY, run_cli


@pytest.mark.slow
def test_two_cpu_processes_train_into_one_run_dir_with_the_metrics_of_one_device(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    args = ["debug=fast", f"data.data_dir={tiny_data_dir}", *TINY, "trainer.precision=32-true"]
    # Every test example scored (2 batches of 16 and 8: one per process), so one device must agree exactly.
    whole_test = ["trainer.limit_test_batches=1.0", "data.eval_batch_size=16"]
    result = run_cli(*args, *whole_test, "trainer.devices=2", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    (run_dir,) = (tmp_path / "outputs" / "translation").glob("*/*")
    (best,) = (run_dir / "checkpoints").glob("step*.ckpt")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt", best.name]
    assert len(list((run_dir / "csv").rglob("metrics.csv"))) == 1
    predictions = (run_dir / "test_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 24 and len({json.loads(line)["id"] for line in predictions}) == 24
    trained = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert trained["perf/tokens_per_sec"] > 0

    result = run_cli(f"ckpt_path={best}", "trainer.devices=1", cwd=tmp_path, script="eval.py", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (eval_dir,) = (tmp_path / "outputs" / "eval").glob("*/*")
    evaluated = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    for name in ("test/bleu", "test/chrf", "test/loss"):
        assert evaluated[name] == pytest.approx(trained[name], rel=1e-6), name


@pytest.mark.slow
def test_a_local_sweep_of_multi_process_jobs_runs_each_job_once(tiny_data_dir: Path, tmp_path: Path) -> None:
    """Each job's second rank runs that job alone, in its folder (not the sweep again); the job after a two-process
    one starts from a process without its group and launcher variables, so the third job equals the first."""
    cwd = tmp_path / "a folder"  # a space in every job's path
    cwd.mkdir()
    args = ["-m", "debug=fast", f"data.data_dir={tiny_data_dir}", *TINY, "trainer.precision=32-true", "logger=csv"]
    result = run_cli(*args, "trainer.devices=2,1,2", cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("Launching 3 jobs locally") == 1
    (sweep_dir,) = (cwd / "multirun" / "translation").glob("*/*")
    assert sorted(job.name for job in sweep_dir.iterdir() if job.is_dir()) == ["0", "1", "2"]
    assert [(sweep_dir / job / "train_ddp_process_1.log").is_file() for job in "012"] == [True, False, True]
    first, _, third = (json.loads((sweep_dir / job / "metrics.json").read_text())["metrics"] for job in "012")
    assert {name: value for name, value in first.items() if not name.startswith("perf/")} == {
        name: value for name, value in third.items() if not name.startswith("perf/")
    }
