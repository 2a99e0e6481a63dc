"""Surviving interruptions: atomic checkpoint writes, a checkpoint on SIGTERM, and `resume=auto` after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY, start
from weaver.checkpoint_io import AtomicCheckpointIO
from weaver.cli.resume import find_unfinished_run

# A translation run long enough to be interrupted: validation (and a checkpoint) every 10 steps.
LONG_TINY_RUN = [
    *TINY,
    "logger=csv",
    "data.max_tokens=null",
    "data.eval_max_tokens=null",
    "data.batch_size=16",
    "data.eval_batch_size=16",
    "trainer.max_steps=40",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=1",
    "scheduler.num_warmup_steps=2",
    "task.max_generate_examples=8",
    "generation.max_new_tokens=8",
    "~callbacks.early_stopping",
    "print_config=false",
]


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)

    def interrupted(checkpoint: dict, target: Path) -> None:
        Path(target).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr("lightning.fabric.plugins.io.torch_io._atomic_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1


def fake_run(folder: Path, overrides: list[str], finished: bool = False, checkpoint: bool = True) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
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


def wait_for(path_pattern: str, cwd: Path, process: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(cwd.glob(path_pattern))
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.2)
    raise AssertionError(f"{path_pattern} did not appear")


@pytest.mark.slow
def test_sigterm_saves_a_loadable_checkpoint(tiny_data_dir: Path, tmp_path: Path) -> None:
    args = [f"data.data_dir={tiny_data_dir}", *LONG_TINY_RUN, "trainer.max_steps=100000"]
    process = start(args, tmp_path)
    wait_for("outputs/translation/*/*/csv/metrics.csv", tmp_path, process)
    time.sleep(2)  # a few training steps in
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    (last,) = tmp_path.glob("outputs/translation/*/*/checkpoints/last.ckpt")
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] > 0 and "weaver_config" in checkpoint


@pytest.mark.slow
def test_resume_auto_after_sigkill_finishes_like_an_uninterrupted_run(tiny_data_dir: Path, tmp_path: Path) -> None:
    args = [f"data.data_dir={tiny_data_dir}", *LONG_TINY_RUN, "resume=auto"]
    (tmp_path / "reference").mkdir()
    (tmp_path / "interrupted").mkdir()
    uninterrupted = start(args, tmp_path / "reference")
    interrupted = start(args, tmp_path / "interrupted")
    wait_for("outputs/translation/*/*/checkpoints/last.ckpt", tmp_path / "interrupted", interrupted)
    interrupted.send_signal(signal.SIGKILL)  # no chance to save anything more
    interrupted.communicate(timeout=60)
    time.sleep(1.1)  # the re-run gets a run folder of its own (named by the second)
    resumed = start(args, tmp_path / "interrupted")
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    assert "resume=auto: continuing" in stdout + stderr
    _, stderr = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, stderr[-3000:]

    finished = [p.parent for p in (tmp_path / "interrupted").glob("outputs/translation/*/*/metrics.json")]
    assert len(finished) == 1
    last = torch.load(finished[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 40
    (reference,) = (tmp_path / "reference").glob("outputs/translation/*/*/metrics.json")
    expected = json.loads(reference.read_text())["metrics"]
    got = json.loads((finished[0] / "metrics.json").read_text())["metrics"]
    # The last validation scores the final weights of each run.
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=0.05)
