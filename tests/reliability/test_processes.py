"""Processes: never more than the machine has, and no rank left behind when another dies."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

from tests.helpers import ROOT, TINY, run_cli_in_process, start, wait_for_line
from weaver.errors import ConfigError
from weaver.utils.hardware import check_devices


def test_more_devices_than_cpu_cores_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    result = run_cli_in_process("trainer.devices=64", *TINY, cwd=tmp_path)
    assert result.returncode == 1
    assert "Error: trainer.devices=64, but this machine has" in result.stderr
    assert "CPU cores available to this process: set trainer.devices to at most" in result.stderr
    assert "GLOBAL_RANK" not in result.stdout + result.stderr


def test_a_gpu_accelerator_on_a_machine_without_gpus_points_at_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match=r"none visible: train on the CPU with hardware=cpu \(or hardware=auto\)"):
        check_devices("gpu", 1)


# A rank started by a launcher that then dies: it prints its pid, and then waits for a signal.
RANK = (
    "import os, signal; from weaver.utils.distributed import exit_with_launcher; exit_with_launcher(); "
    "print(os.getpid(), flush=True); signal.pause()"
)
LAUNCHER = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {RANK!r}]).wait()"


def test_a_rank_exits_when_its_launcher_is_killed() -> None:
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    rank = psutil.Process(int(launcher.stdout.readline()))
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=30)
    rank.wait(timeout=30)  # raises psutil.TimeoutExpired while it lingers
    assert not rank.is_running()


@pytest.mark.slow
def test_the_other_ranks_exit_when_rank_zero_is_killed(tiny_data_dir: Path, tmp_path: Path) -> None:
    launcher = start(
        ["debug=fast", f"data.data_dir={tiny_data_dir}", *TINY, "trainer.devices=2", "trainer.max_steps=100000"],
        tmp_path,
    )
    # Lightning logs this line in each rank once the process group is up, the other rank being started by then.
    wait_for_line(launcher, "MEMBER: 2/2")
    (rank_one,) = psutil.Process(launcher.pid).children()
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=30)
    rank_one.wait(timeout=30)  # raises psutil.TimeoutExpired while it lingers
    assert not rank_one.is_running()
