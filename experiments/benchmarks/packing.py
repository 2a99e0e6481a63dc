"""Packing (`data.packing=true`) against plain length-bucketed padding, for a decoder-only model: padding efficiency
and real tokens per second of `train.py`'s loop, each run in a fresh process, the two alternating.

The run's `ThroughputMonitor` logs both every `--log-every` steps; the first interval (warm-up) is left out.

    python -m experiments.benchmarks.packing [--rounds 5] [--steps 30] [train.py overrides]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from experiments.benchmarks.workload import BENCHMARK_RUN, alternate, compose_config, ratio_summary
from weaver.cli.train import train

SYSTEMS = {"plain": [], "packed": ["data.packing=true"]}
WORKLOAD = ["task=summarization", "model=gpt2_small_scratch", "hardware=cpu"]


def measure(overrides: list[str], steps: int, log_every: int) -> dict[str, float]:
    cfg = compose_config(
        [*BENCHMARK_RUN, *WORKLOAD, f"trainer.max_steps={steps}", f"trainer.log_every_n_steps={log_every}", *overrides]
    )
    train(cfg)
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row.get("perf/tokens_per_sec")][1:]
    return {
        key: round(statistics.mean(float(row[f"perf/{key}"]) for row in rows), 4)
        for key in ("tokens_per_sec", "padding_efficiency")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=list(SYSTEMS), help="measure one side in this process")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("overrides", nargs="*")
    options = parser.parse_args()
    if options.system:
        print(json.dumps(measure([*SYSTEMS[options.system], *options.overrides], options.steps, options.log_every)))
        return
    arguments = [f"--steps={options.steps}", f"--log-every={options.log_every}", *options.overrides]
    results = alternate("experiments.benchmarks.packing", list(SYSTEMS), options.rounds, arguments)
    summary: dict = {}
    for system, rounds in results.items():
        speeds = [r["tokens_per_sec"] for r in rounds]
        summary[system] = {
            "tokens_per_sec_per_round": speeds,
            "tokens_per_sec_median": statistics.median(speeds),
            "tokens_per_sec_range": [min(speeds), max(speeds)],
            "padding_efficiency": statistics.median(r["padding_efficiency"] for r in rounds),
        }
    # Each round's packed run against the plain run beside it: the drift of the machine cancels within a round.
    pairs = zip(results["packed"], results["plain"], strict=True)
    ratios = [packed["tokens_per_sec"] / plain["tokens_per_sec"] for packed, plain in pairs]
    summary["packed_over_plain"] = ratio_summary(ratios)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
