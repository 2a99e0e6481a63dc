"""What a run has written survives: a full disk, a kill mid-save, a second run in its folder, and a SIGKILL."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from tests.helpers import LONG_TINY_RUN, announce_step, another_run_holding, kill_after_step, resume_killed, start
from weaver import checkpoint_io
from weaver.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from weaver.cli.train import train
from weaver.utils.run_lock import RunDirInUse, run_dir_lock


class DiskFills(io.FileIO):
    """A file on a disk that fills up halfway through the first write."""

    def write(self, data: bytes) -> int:
        super().write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def save_on_a_full_disk(checkpoint: dict, file: io.BufferedWriter) -> None:
    """What torch.save does when the disk fills up: its zip writer turns the OSError into a RuntimeError."""
    file.write(b"half a checkpoint")
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1913024 vs 1912912") from None


@pytest.mark.parametrize("surfaces_as", ["OSError", "RuntimeError"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_no_partial_file(
    surfaces_as: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    saver.save_checkpoint({"global_step": 1}, path)
    if surfaces_as == "OSError":
        monkeypatch.setattr(checkpoint_io, "open", lambda file, mode: DiskFills(file, "w"), raising=False)
    else:
        monkeypatch.setattr(checkpoint_io.torch, "save", save_on_a_full_disk)
    with pytest.raises(CheckpointWriteError) as error:
        saver.save_checkpoint({"global_step": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert str(error.value) == (
        f"Cannot write the checkpoint {path}: No space left on device. The previous one is kept. Free space there "
        "(or set paths.output_dir to another disk), then continue with resume=auto."
    )
    assert torch.load(path, weights_only=True)["global_step"] == 1 and list(tmp_path.iterdir()) == [path]


def test_a_kill_mid_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saver, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    saver.save_checkpoint({"global_step": 1}, path)

    def interrupted(checkpoint: dict, file: io.BufferedWriter) -> None:
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_io.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        saver.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1 and list(tmp_path.iterdir()) == [path]


def setup_only(train_config: DictConfig) -> DictConfig:
    """The tiny run, building everything but neither training nor testing."""
    with open_dict(train_config):
        train_config.train = train_config.test = False
    return train_config


def test_a_partial_checkpoint_left_by_a_killed_run_is_removed_at_start(train_config: DictConfig) -> None:
    checkpoints = Path(train_config.paths.output_dir) / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"whole")
    (checkpoints / "last.ckpt.partial").write_bytes(b"half")
    train(setup_only(train_config))
    assert [path.name for path in checkpoints.iterdir()] == ["last.ckpt"]


def test_a_second_run_in_the_same_folder_is_refused_naming_the_first(train_config: DictConfig) -> None:
    run_dir = Path(train_config.paths.output_dir)
    (run_dir / "csv").mkdir(parents=True)
    (run_dir / "csv" / "metrics.csv").write_text("step,train/loss\n1,5.0\n")
    with another_run_holding(run_dir) as first, pytest.raises(RunDirInUse) as error:
        train(train_config)
    assert str(error.value) == (
        f"{run_dir} is in use by another run (PID {first.pid}): wait for it to finish or stop it, or give this run a "
        "folder of its own (hydra.run.dir=...)."
    )
    assert (run_dir / "csv" / "metrics.csv").read_text() == "step,train/loss\n1,5.0\n"


def test_the_lock_of_a_run_that_died_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run.lock").write_text(gone.stdout)
    with caplog.at_level(logging.INFO), run_dir_lock(tmp_path):
        assert (tmp_path / "run.lock").read_text() == f"{os.getpid()}\n"
    assert f"from PID {gone.stdout.strip()}, which is no longer running" in caplog.text


SECRETS = {"WANDB_API_KEY": "wandb-key-0f1e2d3c", "HF_TOKEN": "hf_token_4b5a6978"}


def test_secrets_in_the_environment_stay_out_of_the_run_files(
    train_config: DictConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    train(train_config)
    written = [path for path in Path(train_config.paths.output_dir).rglob("*") if path.is_file()]
    assert any(path.suffix == ".ckpt" for path in written)
    assert [path for path in written for secret in SECRETS.values() if secret.encode() in path.read_bytes()] == []


@pytest.mark.slow
def test_resume_auto_after_sigkill_finishes_like_an_uninterrupted_run(tiny_data_dir: Path, tmp_path: Path) -> None:
    args = [f"data.data_dir={tiny_data_dir}", *LONG_TINY_RUN, "resume=auto", *announce_step(11)]
    (tmp_path / "reference").mkdir()
    (tmp_path / "interrupted").mkdir()
    uninterrupted = start(args, tmp_path / "reference")
    kill_after_step(start(args, tmp_path / "interrupted"), 11)  # past the validation and checkpoint of step 10
    (killed,) = (tmp_path / "interrupted").glob("outputs/translation/*/*")
    killed_log = (killed / "csv" / "metrics.csv").read_text()
    finished = resume_killed(args, tmp_path / "interrupted", killed)
    _, stderr = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, stderr[-3000:]

    last = torch.load(finished / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 40
    assert (killed / "csv" / "metrics.csv").read_text() == killed_log  # the killed run's own files are left alone
    (reference,) = (tmp_path / "reference").glob("outputs/translation/*/*/metrics.json")
    expected = json.loads(reference.read_text())["metrics"]
    got = json.loads((finished / "metrics.json").read_text())["metrics"]
    # The last validation scores the final weights of each run.
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=0.05)
