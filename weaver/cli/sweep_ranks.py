"""Multi-process jobs in a local sweep (`python train.py -m trainer.devices=2 optimizer.lr=1e-3,2e-3`).

Lightning starts a job's other ranks by running the process's command line again in the job's run dir. In a sweep
that command line is the whole sweep (`-m` and every value), so each rank would start the sweep over, and its jobs
would train beside the real ones into a second sweep folder. `job_rank_command` gives the ranks the one job instead:
its own overrides, as a single run in its own folder. And since the sweep's jobs share one process, `job_process`
puts back what a multi-process job leaves in it (the process group, the launcher's variables, the thread count):
otherwise the next job would wait forever on the last one's group, or take itself for an already launched rank.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd, to_absolute_path
from lightning.pytorch.strategies.launchers import subprocess_script

# What Lightning's launchers set in the process that starts the ranks, and never unset.
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")

lightning_rank_command = subprocess_script._hydra_subprocess_cmd


def job_rank_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command (and its working dir) that starts rank `local_rank` of this Hydra job: in a sweep, the job's own
    overrides run once (`hydra.mode=RUN`, also over a sweeper preset's MULTIRUN) in the job's folder; otherwise
    Lightning's, the command line again."""
    import __main__  # at the call: the module running now, as Lightning reads it

    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        return lightning_rank_command(local_rank)
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    job_dir = hydra_config.runtime.output_dir.replace("\\", "\\\\").replace('"', '\\"')
    command += [
        *hydra_config.overrides.task,
        "hydra.mode=RUN",
        f'hydra.run.dir="{job_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",  # the job's .hydra folder is rank 0's
    ]
    return command, get_original_cwd()


@contextmanager
def job_process() -> Iterator[None]:
    """Runs a job with the ranks of a sweep started as `job_rank_command` says, and leaves the process as the job
    found it: no process group it made, the launcher's variables, the thread count and deterministic algorithms
    (`task.compile=true` turns them on) as they were."""
    subprocess_script._hydra_subprocess_cmd = job_rank_command
    variables = {name: os.environ.get(name) for name in LAUNCHER_VARIABLES}
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    had_group = dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        if not had_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
