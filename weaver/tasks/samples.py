"""A few generated examples per validation, so a user sees what the model writes, not only a number, and where in
the source it looked (relevance heatmaps)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger

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


def image_loggers(loggers: list[Logger]) -> list[Logger]:
    """The loggers that show images."""
    return [logger for logger in loggers if isinstance(logger, TensorBoardLogger | WandbLogger)]


def log_heatmaps(images: list[np.ndarray], step: int, loggers: list[Logger]) -> None:
    """(H, W, 3) RGB heatmaps as images `val/relevance/<n>`, one key each: their sizes differ with the lengths of
    source and output, which one W&B image list cannot show."""
    for logger in image_loggers(loggers):
        for index, image in enumerate(images):
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(f"val/relevance/{index}", image, step, dataformats="HWC")
            else:
                logger.log_image(key=f"val/relevance/{index}", images=[image], step=step)
