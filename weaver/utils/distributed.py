"""Gathering Python objects (generated texts) from every rank, a no-op on one process."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_objects(items: list[Any]) -> list[Any]:
    """All ranks' items, concatenated in rank order, on every rank."""
    if world_size() == 1:
        return list(items)
    parts: list[list[Any] | None] = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part or []]
