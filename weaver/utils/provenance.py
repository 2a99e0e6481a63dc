"""What a run dir records about how it was made: the command line, the code version and the installed packages."""

from __future__ import annotations

import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=SOURCE_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def record_provenance(folder: Path) -> None:
    """`command.txt`, `git.txt` (commit and status; `git.diff` when there are uncommitted changes) and
    `packages.txt` (every installed distribution and version) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "command.txt").write_text(shlex.join([sys.executable, *sys.argv]) + "\n")
    commit = git("rev-parse", "HEAD")
    if commit is None:
        (folder / "git.txt").write_text(f"{SOURCE_ROOT} is not a git checkout (an installed package).\n")
    else:
        status = git("status", "--short") or ""
        (folder / "git.txt").write_text(f"commit {commit.strip()}\n{status}")
        diff = git("diff", "HEAD")
        if diff:
            (folder / "git.diff").write_text(diff)
    packages = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]})
    (folder / "packages.txt").write_text("\n".join(packages) + "\n")
