"""Model FLOPs utilisation of `train.py`'s training loop, against the peak measured in the same run.

The run's `ThroughputMonitor` callback times a dense matrix product in the run's precision at the start (the
peak), then logs `perf/mfu` every `trainer.log_every_n_steps` steps: the model's training FLOPs per second
(`training_flops`, counted exactly for the Weaver model) over that peak. This prints every logged interval and
their median, leaving out the first (warm-up).

    python -m experiments.benchmarks.mfu [--steps 60] [train.py overrides, e.g. model=weaver_base data.max_tokens=6000]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import torch

from experiments.benchmarks.workload import BENCHMARK_RUN, compose_config
from weaver.cli.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("overrides", nargs="*")
    options = parser.parse_args()
    hardware = "hardware=gpu" if torch.cuda.is_available() else "hardware=cpu"
    overrides = [hardware, f"trainer.max_steps={options.steps}", f"trainer.log_every_n_steps={options.log_every}"]
    cfg = compose_config([*BENCHMARK_RUN, *overrides, *options.overrides])
    _, objects = train(cfg)
    monitor = next(c for c in objects["trainer"].callbacks if type(c).__name__ == "ThroughputMonitor")
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row.get("perf/mfu")]
    intervals = [
        {key: round(float(row[key]), 4) for key in ("step", "perf/mfu", "perf/tflops", "perf/tokens_per_sec")}
        for row in rows
    ]
    report = {
        "peak_tflops": round(monitor.peak_flops / 1e12, 3),
        "intervals": intervals,
        "median_mfu": round(statistics.median(r["perf/mfu"] for r in intervals[1:]), 4),
        "median_tokens_per_sec": round(statistics.median(r["perf/tokens_per_sec"] for r in intervals[1:]), 1),
        "overrides": [*overrides, *options.overrides],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
