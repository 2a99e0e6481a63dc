"""Training speed in the logs: real tokens per second, padding efficiency, and model FLOPs utilisation (MFU)."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from weaver.data.collate import LABEL_PAD
from weaver.utils.hardware import compute_dtype, peak_flops

log = logging.getLogger(__name__)


class ThroughputMonitor(Callback):
    """Every `log_every_n_steps` optimizer steps (default: the trainer's), over the batches since the last log:

    - `perf/tokens_per_sec`: non-pad source + target tokens per second, all ranks together;
    - `perf/padding_efficiency`: real / padded tokens of those batches;
    - `perf/tflops` and `perf/mfu`: the model's training FLOPs (its `training_flops(batch, source, target)`, which
      count every weight as trained) per second per device, and their share of the device's peak: `peak_flops`
      (FLOP/s of one device) when set, else the documented dense peak of a GPU, or (on a CPU, or a GPU Lightning
      has no figure for) a dense matrix product timed at the start in the run's precision. Frozen weights (`peft`)
      skip their weight-gradient products, a third of a trained weight's: the count keeps that third only for the
      trainable share of the parameters.

    Time spent validating is left out.
    """

    def __init__(self, peak_flops: float | None = None, log_every_n_steps: int | None = None) -> None:
        self.peak_flops, self.log_every_n_steps = peak_flops, log_every_n_steps
        self.flops_of: Any = None
        self.trained_share = 1.0
        self.last_logged_step = -1
        self.warned_over_peak = False
        self.reset()

    def reset(self) -> None:
        self.start: float | None = None
        self.paused = self.pause_start = 0.0
        self.real: torch.Tensor | int = 0
        self.padded = self.flops = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.every = self.log_every_n_steps or trainer.log_every_n_steps
        self.flops_of = getattr(pl_module.model, "training_flops", None)
        trainable = sum(p.numel() for p in pl_module.model.parameters() if p.requires_grad)
        self.trained_share = (2 + trainable / max(sum(p.numel() for p in pl_module.model.parameters()), 1)) / 3
        if self.flops_of is not None and self.peak_flops is None:
            self.peak_flops, source = peak_flops(pl_module.device, compute_dtype(trainer.precision))
            if self.peak_flops and trainer.is_global_zero:
                log.info("MFU is measured against %.2f TFLOP/s per device (%s).", self.peak_flops / 1e12, source)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        labels = batch["labels"]
        if "document_ids" in batch:  # packed rows (data.packing): prompts and completions share the columns
            real, padded = batch["attention_mask"].sum(), batch["input_ids"].numel()
            shape = (labels.size(0), labels.size(1), 0)
        else:
            real = batch["attention_mask"].sum() + labels.ne(LABEL_PAD).sum()
            padded = batch["input_ids"].numel() + labels.numel()
            shape = (labels.size(0), batch["input_ids"].size(1), labels.size(1))
        self.real = self.real + real  # summed on the device
        self.padded += padded
        if self.flops_of is not None:
            self.flops += self.flops_of(*shape) * self.trained_share

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pause_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is not None:
            self.paused += time.perf_counter() - self.pause_start

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not self.every or self.start is None or step == self.last_logged_step or step % self.every:
            return
        self.last_logged_step = step
        real = float(self.real)  # waits for the device, so the clock below covers the work
        elapsed = time.perf_counter() - self.start - self.paused
        totals = torch.tensor([real, self.padded, self.flops], dtype=torch.float64, device=pl_module.device)
        real, padded, flops = trainer.strategy.reduce(totals, reduce_op="sum").tolist()
        metrics = {"perf/tokens_per_sec": real / elapsed, "perf/padding_efficiency": real / max(padded, 1)}
        if self.flops_of is not None:
            per_device = flops / elapsed / trainer.world_size
            metrics["perf/tflops"] = per_device / 1e12
            if self.peak_flops:
                metrics["perf/mfu"] = per_device / self.peak_flops
                if metrics["perf/mfu"] > 1 and not self.warned_over_peak and trainer.is_global_zero:
                    self.warned_over_peak = True
                    log.warning(
                        "perf/mfu=%.2f is above 1: the peak it divides by (%.3f TFLOP/s) is low, as a CPU's is when "
                        "other work slowed the matrix product timed at the start; give one device's peak FLOP/s as "
                        "callbacks.throughput.peak_flops.",
                        metrics["perf/mfu"],
                        self.peak_flops / 1e12,
                    )
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, rank_zero_only=True)
        self.reset()
