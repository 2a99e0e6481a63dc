"""Loops that every rank of a sharded model must run the same number of times.

Under FSDP each forward of a sharded unit (a Transformer layer) gathers that unit's weights from every rank: a rank
that stops decoding early, or encodes fewer windows, leaves the others waiting in a collective that never completes
(NCCL's timeout is 30 minutes). A model in lockstep therefore stops a loop only when every rank is done with it,
and the ranks that finish first run idle steps meanwhile (transformers' `synced_gpus` does the same).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel


def in_lockstep(module: nn.Module) -> bool:
    """Whether `module` runs sharded across ranks (FSDP units inside it), so its forwards are collective."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return False
    return any(isinstance(child, FullyShardedDataParallel) for child in module.modules())


def all_done(done: bool, lockstep: bool, device: torch.device) -> bool:
    """`done` on this rank alone, or, in lockstep, on every rank."""
    if not lockstep:
        return done
    flag = torch.tensor(int(done), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def most_on_any_rank(count: int, lockstep: bool, device: torch.device) -> int:
    """`count` on this rank alone, or, in lockstep, the largest of every rank's."""
    if not lockstep:
        return count
    value = torch.tensor(count, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value)
