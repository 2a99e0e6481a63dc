"""Padding efficiency (real / padded tokens) of one training epoch's batches: fixed-size random batches against
token-budget (`data.max_tokens`) batches, on each task's default training data.

    python -m experiments.benchmarks.padding_efficiency [--task translation] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from experiments.benchmarks.workload import BENCHMARK_RUN, compose_config, datamodule
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="translation")
    parser.add_argument("--batch-size", type=int, default=None, help="fixed batch size (default: Weaver's mean)")
    parser.add_argument("overrides", nargs="*")
    options = parser.parse_args()
    budget = datamodule(compose_config([*BENCHMARK_RUN, f"task={options.task}", *options.overrides]))
    budget_batches = budget.batches("train")
    batch_size = options.batch_size or round(np.mean([len(batch) for batch in budget_batches]))
    fixed = datamodule(
        compose_config(
            [*BENCHMARK_RUN, f"task={options.task}", "data.max_tokens=null", f"data.batch_size={batch_size}"]
        )
    )
    report = {
        "task": options.task,
        "max_tokens": budget.hparams.max_tokens,
        "token_budget": efficiency(budget, budget_batches),
        "fixed_batch_size": batch_size,
        "fixed_size": efficiency(fixed, fixed.batches("train")),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
