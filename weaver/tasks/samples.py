"""A few generated examples per validation, so a user sees what the model writes, not only a number."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

COLUMNS = ("id", "source", "reference", "hypothesis")


def pick_samples(records: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """A different random handful at each step (seeded by it), in id order."""
    chosen = random.Random(seed).sample(records, min(count, len(records)))
    return sorted(chosen, key=lambda record: record["id"])


def log_samples(samples: list[dict[str, Any]], folder: Path, step: int, loggers: list[Logger]) -> Path:
    """Always a JSONL file in the run dir; also a W&B table when W&B is one of the loggers."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"val_step{step:07d}.jsonl"
    with path.open("w", encoding="utf-8") as file:
        for sample in samples:
            file.write(json.dumps({column: sample[column] for column in COLUMNS}, ensure_ascii=False) + "\n")
    rows = [[sample[column] for column in COLUMNS] for sample in samples]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key="val/samples", columns=list(COLUMNS), data=rows, step=step)
    return path
