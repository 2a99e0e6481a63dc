"""Framework overhead: `train.py`'s Lightning training loop against a hand-written PyTorch loop.

Both train the same Weaver model from the same seed on the same batches (the data module's training loader), with
the same optimizer, schedule, precision, loss and gradient clipping. The Lightning side is the platform as a user
runs it, minus checkpoints and validation: the task module, logging, the Rich progress bar and the learning-rate
and throughput monitors. Each measurement runs in a fresh process, in ABBA order (raw Lightning, Lightning raw,
...) so drift hits both alike; each reports seconds per step over the steps after a warm-up, in wall-clock and in
process CPU time. The report gives the ratio's every round, median, mean and range, and the ratio of the total
times; `--profile` runs each side once more under cProfile and attributes the steps' own time to the code it is
spent in (torch's kernels, Lightning, torchmetrics, Rich, Weaver, ...), so what Lightning adds can be named.

    python -m experiments.benchmarks.lightning_overhead [--steps 60] [--rounds 6] [--profile] [train.py overrides]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import statistics
import time

import lightning as L
import torch

from experiments.benchmarks.workload import (
    BENCHMARK_RUN,
    MODEL,
    alternate,
    compose_config,
    datamodule,
    profile_groups,
    ratio_summary,
    timed_train,
)
from weaver.data.collate import LABEL_PAD
from weaver.instantiate import build, build_model
from weaver.tasks.loss import smoothed_cross_entropy
from weaver.tasks.seq2seq import shift_right
from weaver.utils.hardware import compute_dtype


def raw_loop(overrides: list[str], steps: int, warmup: int, profile: bool = False) -> dict:
    """Wall and CPU milliseconds per step of a plain PyTorch loop doing what the task's training_step and Lightning's
    loop do (with `profile`, and the profile's groups)."""
    cfg = compose_config([*BENCHMARK_RUN, *overrides])
    L.seed_everything(cfg.seed, workers=True)  # as train() does: the same seed orders the same batches
    data = datamodule(cfg)
    tokenizer = data.tokenizer
    model = build_model(cfg, tokenizer).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = build(cfg.optimizer, "optimizer")(params=parameters)
    scheduler = build(cfg.scheduler, "scheduler")(optimizer, num_training_steps=warmup + steps)
    dtype = compute_dtype(cfg.trainer.precision)
    start = cpu_start = 0.0
    profiler = cProfile.Profile() if profile else None
    for step, batch in enumerate(data.train_dataloader()):
        if step == warmup:
            start, cpu_start = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
        if step == warmup + steps:
            break
        decoder_input_ids = shift_right(batch["labels"], model.decoder_start_token_id, tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            logits = model(batch["input_ids"], batch["attention_mask"], decoder_input_ids)
        loss = smoothed_cross_entropy(
            logits.flatten(0, 1), batch["labels"].flatten(), cfg.task.label_smoothing, LABEL_PAD
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.detach().item()  # as Lightning reads the loss for its progress bar
    if profiler is not None:
        profiler.disable()
    wall, cpu = (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps
    return per_step(wall, cpu, profile_groups(profiler, steps) if profiler is not None else None)


def lightning_loop(overrides: list[str], steps: int, warmup: int, profile: bool = False) -> dict:
    """The same of `train(cfg)`, timed (and profiled) by a callback over the same steps."""
    measured = timed_train(overrides, steps, warmup, profile)
    groups = profile_groups(measured.profiler, steps) if profile else None
    return per_step(measured.seconds / steps, measured.cpu_seconds / steps, groups)


def per_step(wall: float, cpu: float, groups: dict[str, float] | None) -> dict:
    measured: dict = {"wall_ms_per_step": round(1000 * wall, 2), "cpu_ms_per_step": round(1000 * cpu, 2)}
    if groups is not None:
        measured["profile_ms_per_step"] = groups
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--profile", action="store_true", help="profile each side once, after the timed rounds")
    parser.add_argument("--system", choices=["raw", "lightning"], help="measure one, in this process")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. model=weaver_base")
    options = parser.parse_args()
    overrides = ["hardware=cpu", "scheduler.num_warmup_steps=10", *MODEL, *options.overrides]
    if options.system:
        loop = raw_loop if options.system == "raw" else lightning_loop
        print(json.dumps(loop(overrides, options.steps, options.warmup, options.profile)))
        return
    arguments = [f"--steps={options.steps}", f"--warmup={options.warmup}", *options.overrides]
    results = alternate(__spec__.name, ["raw", "lightning"], options.rounds, arguments)
    report: dict = {"overrides": overrides, "steps": options.steps}
    for clock in ("wall_ms_per_step", "cpu_ms_per_step"):
        raw, lightning = [r[clock] for r in results["raw"]], [r[clock] for r in results["lightning"]]
        ratios = [b / a for a, b in zip(raw, lightning, strict=True)]
        report[clock] = {
            "raw": raw,
            "lightning": lightning,
            "lightning_over_raw": ratio_summary(ratios, 1.03, higher_is_better=False),
            "mean_ratio": round(statistics.mean(ratios), 4),
            "total_time_ratio": round(sum(lightning) / sum(raw), 4),
        }
    if options.profile:
        profiled = alternate(__spec__.name, ["raw", "lightning"], 1, [*arguments, "--profile"])
        groups = {side: runs[0]["profile_ms_per_step"] for side, runs in profiled.items()}
        report["profile_ms_per_step"] = {
            group: {"raw": groups["raw"][group], "lightning": ms, "added": round(ms - groups["raw"][group], 2)}
            for group, ms in groups["lightning"].items()
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
