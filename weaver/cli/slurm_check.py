"""`launcher=slurm` refused in one line where it cannot submit, before submitit's traceback or a local run."""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SLURM_COMMANDS = ("sbatch", "srun")


def refuse(message: str) -> None:
    """Exits with the one-line error the tools give (Hydra would print a traceback for an exception here)."""
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)


class SlurmLauncherCheck(Callback):
    """A Hydra callback of `conf/launcher/slurm.yaml`: a sweep submits through SLURM's commands, so they must be on
    PATH (a login node). Without `-m` the launcher is never used: inside a SLURM job (`srun python train.py
    launcher=slurm ...` in a batch script) the config still sizes the run, outside one the job would silently
    train on this machine."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
        if missing:
            refuse(
                f"launcher=slurm submits jobs with SLURM's {' and '.join(missing)}, not found on PATH: run the "
                "sweep on the cluster's login node, or leave launcher=slurm out to run it on this machine."
            )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "SLURM_JOB_ID" not in os.environ:
            refuse(
                "launcher=slurm submits the jobs of a sweep: add -m (python train.py -m launcher=slurm ...), or "
                "run it inside a SLURM job."
            )
