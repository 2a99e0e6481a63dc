"""ThroughputMonitor: what it logs follows from the batches it saw, the model's FLOP count and the peak."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from weaver.callbacks import ThroughputMonitor
from weaver.data.collate import LABEL_PAD

FLOPS_PER_TOKEN_PAIR = 1e6


class CountedModel(torch.nn.Module):
    def __init__(self, frozen: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.frozen = torch.nn.Parameter(torch.ones(frozen), requires_grad=False)  # as `peft` freezes the base

    def training_flops(self, batch: int, source: int, target: int) -> float:
        return batch * source * target * FLOPS_PER_TOKEN_PAIR


class Task(L.LightningModule):
    def __init__(self, frozen: int) -> None:
        super().__init__()
        self.model = CountedModel(frozen)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return (self.model.weight * batch["attention_mask"].sum()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def batch(source_lengths: list[int], target_lengths: list[int]) -> dict[str, torch.Tensor]:
    width, height = max(source_lengths), max(target_lengths)
    mask = torch.tensor([[i < n for i in range(width)] for n in source_lengths])
    labels = torch.tensor([[5 if i < n else LABEL_PAD for i in range(height)] for n in target_lengths])
    return {"input_ids": mask.long(), "attention_mask": mask, "labels": labels}


# Frozen weights skip their weight gradients, a third of a trained weight's FLOPs: with 3 of 4 parameters frozen,
# 2/3 + 1/3 * 1/4 of the count.
BATCHES = [batch([4, 2], [3, 1]), batch([6, 6, 1], [2, 2, 2])] * 2


def logged_rows(task: Task, folder: Path, log_every_n_steps: int, peak: float | None = None) -> list[dict[str, str]]:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        log_every_n_steps=log_every_n_steps,
        logger=CSVLogger(folder, name="", version=""),
        callbacks=[ThroughputMonitor(peak_flops=peak)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(BATCHES, batch_size=None))
    if not (folder / "metrics.csv").exists():
        return []
    with (folder / "metrics.csv").open() as file:
        return [row for row in csv.DictReader(file) if row.get("perf/padding_efficiency")]


def test_no_logging_logs_no_throughput(tmp_path: Path) -> None:
    assert logged_rows(Task(0), tmp_path, log_every_n_steps=0) == []  # Lightning's log_every_n_steps=0: none


@pytest.mark.parametrize(("frozen", "counted"), [(0, 1.0), (3, 0.75)])
def test_logged_padding_efficiency_tokens_and_mfu_follow_from_the_batches(
    frozen: int, counted: float, tmp_path: Path
) -> None:
    peak = 1e9
    rows = logged_rows(Task(frozen), tmp_path, log_every_n_steps=2, peak=peak)

    # Steps 2 and 4 each cover one of each batch: real 6 + 4 + 13 + 6 tokens of 8 + 6 + 18 + 6 padded.
    assert len(rows) == 2
    for row in rows:
        assert float(row["perf/padding_efficiency"]) == pytest.approx(29 / 38)
        tokens_per_sec, tflops = float(row["perf/tokens_per_sec"]), float(row["perf/tflops"])
        seconds = 29 / tokens_per_sec
        flops = (2 * 4 * 3 + 3 * 6 * 2) * FLOPS_PER_TOKEN_PAIR * counted
        assert tflops * 1e12 * seconds == pytest.approx(flops, rel=1e-6)
        assert float(row["perf/mfu"]) == pytest.approx(tflops * 1e12 / peak)


def test_a_peak_below_what_the_model_reaches_is_named_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A CPU's peak is a matrix product timed at the start: other work then makes it low, and MFU above 1."""
    with caplog.at_level(logging.WARNING, logger="weaver.callbacks.throughput"):
        rows = logged_rows(Task(0), tmp_path, log_every_n_steps=2, peak=1.0)
    assert all(float(row["perf/mfu"]) > 1 for row in rows) and len(rows) == 2
    assert caplog.text.count("is above 1: the peak it divides by") == 1
