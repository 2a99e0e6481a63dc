"""Every command-line tool composes its config before importing PyTorch and Lightning: `--help`, a mistyped group
option and a missing checkpoint are answered without loading them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import user_env

# Calls each tool's main() as its script does, then says which heavy packages the process loaded.
CALLS = """
import contextlib, sys
from weaver.cli import tools
for tool, args in (
    ("train", ["--help"]),
    ("train", ["model=nope"]),
    ("evaluate", []),
    ("predict", ["input=hi"]),
    ("explain", ["input=hi"]),
    ("export", ["ckpt_path=x.ckpt"]),
):
    sys.argv = [f"{tool}.py", *args]
    with contextlib.suppress(SystemExit):
        getattr(tools, tool)()
print("loaded:", sorted(name for name in ("torch", "lightning", "transformers") if name in sys.modules))
"""


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=user_env(cwd), capture_output=True, text=True, timeout=120
    )


def test_help_and_config_errors_come_before_pytorch_loads(tmp_path: Path) -> None:
    result = run_python(CALLS, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Compose your configuration from those groups" in result.stdout
    assert "Could not find 'model/nope'" in result.stderr
    assert result.stderr.count("Error: ckpt_path is required: add ckpt_path=<a .ckpt file") == 3
    assert "Error: output_dir is required: add output_dir=... to the command." in result.stderr
    assert result.stdout.splitlines()[-1] == "loaded: []"


# A tool whose code Lightning stops on SIGTERM (as eval.py's test loop is, after finishing its batch).
STOPPED = """
import sys
from lightning.pytorch.utilities.exceptions import SIGTERMException
from weaver.cli.entry import entry_point

def stopped(cfg):
    raise SIGTERMException

sys.argv = ["export.py", "ckpt_path=x.ckpt", "output_dir=out"]
entry_point("export", stopped)()
"""


def test_a_tool_stopped_by_sigterm_exits_with_143(tmp_path: Path) -> None:
    """Lightning's SIGTERMException is a SystemExit without a code: uncaught, a preempted job would end as a
    success."""
    result = run_python(STOPPED, tmp_path)
    assert result.returncode == 143 and "Stopped by SIGTERM." in result.stderr
