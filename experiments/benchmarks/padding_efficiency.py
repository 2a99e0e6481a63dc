"""Padding efficiency (real / padded tokens) of one training epoch's batches, on each task's default training data:
Weaver's token-budget (`data.max_tokens`) batches against HF `Trainer`'s `group_by_length` batches (its own
`LengthGroupedSampler`, grouping by source length as the Trainer does, in batches of consecutive sampled examples)
and against fixed-size random batches, both of Weaver's mean batch size. No timing: the same batches on any machine.

    python -m experiments.benchmarks.padding_efficiency [--task translation] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from experiments.benchmarks.workload import BENCHMARK_RUN, MODEL, compose_config, datamodule
from weaver.data import Seq2SeqDataModule


def efficiency(data: Seq2SeqDataModule, batches: list[list[int]]) -> dict[str, float]:
    """Per side, and both sides together (real tokens of both over padded tokens of both)."""
    per_side = data.padding_efficiency("train", batches)
    real = {side: int(values.sum()) for side, values in data.lengths("train").items()}
    padded = sum(real[side] / per_side[side] for side in real)
    return {
        **{side: round(value, 4) for side, value in per_side.items()},
        "both": round(sum(real.values()) / padded, 4),
    }


def group_by_length_batches(source_lengths: np.ndarray, batch_size: int, seed: int) -> list[list[int]]:
    """One epoch of HF `Trainer`'s `train_sampling_strategy="group_by_length"`: its sampler's order (examples sorted by
    source length within megabatches of 50 batches), cut into consecutive batches as its DataLoader cuts it."""
    generator = torch.Generator().manual_seed(seed)
    order = list(LengthGroupedSampler(batch_size, lengths=source_lengths.tolist(), generator=generator))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="translation")
    parser.add_argument("--batch-size", type=int, default=None, help="HF batch size (default: Weaver's mean)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs (shuffles) measured per side")
    parser.add_argument("overrides", nargs="*")
    options = parser.parse_args()
    budget = datamodule(compose_config([*BENCHMARK_RUN, *MODEL, f"task={options.task}", *options.overrides]))
    sampler = budget.batch_sampler("train", shuffle=True, num_replicas=1, rank=0)
    epochs = range(options.epochs)
    budget_epochs = [sampler.all_batches(epoch) for epoch in epochs]
    batch_size = options.batch_size or round(np.mean([len(batch) for batch in budget_epochs[0]]))
    fixed = datamodule(
        compose_config(
            [*BENCHMARK_RUN, *MODEL, f"task={options.task}", "data.max_tokens=null", f"data.batch_size={batch_size}"]
        )
    )
    fixed_sampler = fixed.batch_sampler("train", shuffle=True, num_replicas=1, rank=0)
    source_lengths = budget.lengths("train")["source"]
    sides = {
        "token_budget": [efficiency(budget, batches) for batches in budget_epochs],
        "group_by_length": [efficiency(budget, group_by_length_batches(source_lengths, batch_size, e)) for e in epochs],
        "fixed_size": [efficiency(fixed, fixed_sampler.all_batches(epoch)) for epoch in epochs],
    }
    report = {"task": options.task, "max_tokens": budget.hparams.max_tokens, "batch_size": batch_size}
    for side, measured in sides.items():
        both = [value["both"] for value in measured]
        report[side] = {"first_epoch": measured[0], "both_min": min(both), "both_max": max(both)}
    ratios = [a["both"] / b["both"] for a, b in zip(sides["token_budget"], sides["group_by_length"], strict=True)]
    report["token_budget_over_group_by_length"] = [round(ratio, 4) for ratio in ratios]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
