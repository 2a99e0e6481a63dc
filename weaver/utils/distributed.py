"""Gathering Python objects (generated texts) from every rank, a no-op on one process; ranks that end together."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_only


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_objects(items: list[Any]) -> list[Any]:
    """All ranks' items, concatenated in rank order, on every rank."""
    if world_size() == 1:
        return list(items)
    parts: list[list[Any] | None] = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part or []]


def is_first_process() -> bool:
    """Whether this process is rank 0 of its run, known before the Trainer works the ranks out.

    Lightning reads the rank at import from what launchers set (`RANK` from torchrun, `SLURM_PROCID` from srun,
    `LOCAL_RANK` for its own launcher's children); a run started by hand on each node sets only `NODE_RANK`, so the
    first process of node 1 would also look like rank 0 and take the run dir from the real one.
    """
    node_rank = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")))
    return rank_zero_only.rank == 0 and node_rank == 0


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def exit_with_launcher() -> None:
    """Linux: this process is killed as soon as the process that started it dies.

    Lightning's launcher (rank 0) kills every rank when one of its children dies, but nothing watches rank 0: killed
    itself (SIGKILL, the OOM killer), it would leave the other ranks waiting in a collective until the process
    group's timeout (30 minutes). Called on ranks > 0.
    """
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before the line above
        os._exit(1)
