"""Loggers: a run continued in its own folder keeps the CSV rows it logged before the interruption."""

from __future__ import annotations

import csv
from pathlib import Path

from weaver.loggers import ContinuingCSVLogger


def logged_rows(folder: Path, continued_from: str | None, steps: range) -> list[dict[str, str]]:
    logger = ContinuingCSVLogger(save_dir=str(folder), name="csv", version="", continued_from=continued_from)
    for step in steps:
        logger.log_metrics({"train/loss": 10.0 - step}, step=step)
    logger.save()
    with (folder / "csv" / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def test_a_continued_run_keeps_the_rows_before_its_checkpoint(tmp_path: Path) -> None:
    logged_rows(tmp_path, None, range(0, 8))  # interrupted after step 7; its checkpoint was at step 4
    rows = logged_rows(tmp_path, "checkpoints/last.ckpt", range(5, 10))
    assert [int(row["step"]) for row in rows] == list(range(10))  # steps 5-7 once, as the continuation logged them
    assert float(rows[6]["train/loss"]) == 4.0
    # A fresh run in the folder starts the file anew, as Lightning's logger does.
    assert [int(row["step"]) for row in logged_rows(tmp_path, None, range(0, 3))] == [0, 1, 2]
