"""Running the command-line tools as a user does, for the tests that need a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]


def user_env(cwd: Path) -> dict[str, str]:
    """The environment of a user's shell, offline, with its caches under `cwd`."""
    return {**os.environ, "WEAVER_CACHE_DIR": str(cwd / "cache"), "HF_HUB_OFFLINE": "1"}


def run_cli(
    *args: str, cwd: Path, timeout: int = 300, script: str = "train.py", stdin_text: str | None = None
) -> subprocess.CompletedProcess:
    """`python <script> args` from the repository root, as a user runs it, offline."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=user_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin_text,
    )


TINY = ["model=weaver_tiny", "tokenizer.vocab_size=400", "hardware=cpu"]


def start(args: list[str], cwd: Path, script: str = "train.py") -> subprocess.Popen:
    """`python <script> args` started in the background, its output piped."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=user_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def best_checkpoint(cfg: DictConfig) -> Path:
    """The best checkpoint a finished run of `cfg` wrote (not `last.ckpt`)."""
    (path,) = [p for p in (Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    return path
