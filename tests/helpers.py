"""Running the command-line tools as a user does, and waiting for what a real process does, without sleeping."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from unittest import mock

import torch
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig

from weaver.cli import tools

ROOT = Path(__file__).resolve().parents[1]


def user_env(cwd: Path) -> dict[str, str]:
    """The environment of a user's shell, offline, with its caches under `cwd`."""
    return {**os.environ, "WEAVER_CACHE_DIR": str(cwd / "cache"), "HF_HUB_OFFLINE": "1"}


def run_cli(
    *args: str,
    cwd: Path,
    timeout: int = 300,
    script: str = "train.py",
    stdin_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`python <script> args` from the repository root, as a user runs it, offline (`env`: variables to change)."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env={**user_env(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin_text,
    )


def run_cli_in_process(
    *args: str, cwd: Path, script: str = "train.py", stdin_text: str = ""
) -> subprocess.CompletedProcess:
    """`run_cli` in this process: the same `main()` on the same command line, environment and working folder, with
    its exit code, stdout and stderr, without the seconds a new process spends importing PyTorch and Lightning (for
    commands that fail early, or load a checkpoint and score or generate). What the tool changes for its run (the
    working folder, the environment, logging's handlers, stdin: `stdin_text`) is put back."""
    main = getattr(tools, {"eval.py": "evaluate.py"}.get(script, script).removesuffix(".py"))
    stdout, stderr = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level, saved_argv, saved_cwd = root.handlers[:], root.level, sys.argv, Path.cwd()
    saved_env = os.environ.copy()
    os.environ.update(user_env(cwd))
    sys.argv = [str(ROOT / script), *args]
    os.chdir(cwd)
    returncode = 0
    # Hydra configures logging for each command, and `logging.config` then closes every handler ever made: absl's
    # would close the stream it was made with (pytest's capture). A user's process configures it once, at its start.
    no_closing = mock.patch.object(logging, "shutdown", lambda *_: None)
    try:
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            mock.patch.object(sys, "stdin", io.StringIO(stdin_text)),
            no_closing,
        ):
            try:
                main()
            except SystemExit as exit:
                returncode = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
            except Exception:  # as the interpreter reports what escapes `main()`
                traceback.print_exc()
                returncode = 1
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:] = handlers
        root.setLevel(level)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(sys.argv, returncode, stdout.getvalue(), stderr.getvalue())


TINY = ["model=weaver_tiny", "tokenizer.vocab_size=400", "hardware=cpu"]
# Any model's run, shrunk to be interrupted and resumed: every step logged, small batches and evaluations.
INTERRUPTIBLE = [
    "logger=csv",
    "data.max_tokens=null",
    "data.eval_max_tokens=null",
    "data.batch_size=16",
    "data.eval_batch_size=16",
    "trainer.log_every_n_steps=1",
    "scheduler.num_warmup_steps=2",
    "task.max_generate_examples=8",
    "generation.max_new_tokens=8",
    "~callbacks.early_stopping",
    "print_config=false",
]
# A translation run long enough to be interrupted: validation (and a checkpoint) every 10 steps.
LONG_TINY_RUN = [*TINY, *INTERRUPTIBLE, "trainer.max_steps=40", "trainer.val_check_interval=10"]


def start(
    args: list[str], cwd: Path, script: str = "train.py", env: dict[str, str] | None = None, output: IO | None = None
) -> subprocess.Popen:
    """`python <script> args` started in the background with `env` added to the user's, its output piped (or both
    streams written to `output`)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env={**user_env(cwd), **(env or {})},
        stdout=output or subprocess.PIPE,
        stderr=subprocess.STDOUT if output else subprocess.PIPE,
        text=True,
    )


def best_checkpoint(cfg: DictConfig) -> Path:
    """The best checkpoint a finished run of `cfg` wrote (not `last.ckpt`)."""
    (path,) = [p for p in (Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    return path


class AnnounceStep(Callback):
    """Prints `step <n>` once training has taken `step` optimizer steps: the line a test waits for, instead of
    sleeping (`+callbacks.announce._target_=tests.helpers.AnnounceStep +callbacks.announce.step=<n>`)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            print(f"step {self.step}", flush=True)


def announce_step(step: int) -> list[str]:
    """The overrides that add `AnnounceStep(step)` to a run."""
    return ["+callbacks.announce._target_=tests.helpers.AnnounceStep", f"+callbacks.announce.step={step}"]


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """One hash of every tensor's name and bytes: equal digests, bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class PrintWeights(Callback):
    """Prints `rank <r> weights <digest>` when training ends, on every rank: how a test compares the weights held by
    separate processes (`+callbacks.weights._target_=tests.helpers.PrintWeights`)."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        print(f"rank {trainer.global_rank} weights {weights_digest(pl_module.state_dict())}", flush=True)


def wait_for_line(process: subprocess.Popen, text: str) -> None:
    """Reads the process's output until a line holds `text`; fails with its errors if it ends first."""
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f"{text!r} never came: {process.communicate()[1][-3000:]}")


def kill_after_step(process: subprocess.Popen, step: int) -> None:
    """SIGKILLs a run started with `announce_step(step)` once it has taken that step: no chance to save more."""
    wait_for_line(process, f"step {step}")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def resume_killed(args: list[str], cwd: Path, killed: Path) -> Path:
    """Runs `train.py args` (holding `resume=auto`) to its end in `cwd`, checks that it continued the run in `killed`,
    and returns its own run dir, beside the runs of its task that `resume=auto` looks through."""
    run_dir = killed.parents[1] / "resumed" / "run"
    resumed = start([*args, f"hydra.run.dir={run_dir}"], cwd)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    assert f"resume=auto: continuing {killed}" in stdout + stderr
    return run_dir


def logged_values(run_dir: Path, name: str) -> dict[int, float]:
    """The values of metric `name` in a run's CSV log, by step."""
    with (run_dir / "csv" / "metrics.csv").open() as file:
        return {int(row["step"]): float(row[name]) for row in csv.DictReader(file) if row.get(name)}


# Holds the run lock of the folder given as its argument until its input ends.
HOLD_LOCK = """import sys
from pathlib import Path
from weaver.utils.run_lock import run_dir_lock
with run_dir_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def another_run_holding(folder: Path) -> Iterator[subprocess.Popen]:
    """A live process that holds `folder`'s run lock while the block runs."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.communicate("")
