"""Model FLOPs utilisation of `train.py`'s training loop, against the peak measured in the same run and against the
CPU vendor's theoretical peak.

The run's `ThroughputMonitor` callback times a dense matrix product in the run's precision at the start (the
measured peak), then logs `perf/tflops` and `perf/mfu` every `trainer.log_every_n_steps` steps: the model's training
FLOPs per second (`training_flops`, counted exactly for the Weaver model) and their share of that peak. This prints
every logged interval, with tokens/s, and their median and range, leaving out the first (warm-up); on a CPU the
vendor knows (`vendor_peak`), the same achieved FLOP/s over its theoretical peak too.

    python -m experiments.benchmarks.mfu [--steps 60] [train.py overrides, e.g. model=weaver_base data.max_tokens=6000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
from pathlib import Path

import torch

from experiments.benchmarks.workload import BENCHMARK_RUN, MODEL, compose_config
from weaver.cli.train import train

# Dense bf16 FLOP per cycle per core, by (vendor, CPU family), and the highest clock any part of that family runs at:
# - AMD family 26 (Zen 5, EPYC 9005): two 512-bit FMA pipes per core (AMD, "Software Optimization Guide for the AMD
#   Zen5 Microarchitecture", publication 58455); a bf16 dot-product instruction (VDPBF16PS) does 32 multiply-adds in
#   each: 128 FLOP per cycle. EPYC 9005 boost clocks reach 5.0 GHz (EPYC 9175F, AMD's product page).
# - AMD family 25 (Zen 4, EPYC 9004): the same instructions on two 256-bit FMA pipes, 512-bit ones in two passes:
#   64 FLOP per cycle; boost clocks up to 4.4 GHz (EPYC 9184X).
CPU_PEAKS = {("AuthenticAMD", 26): (128, 5.0, "Zen 5"), ("AuthenticAMD", 25): (64, 4.4, "Zen 4")}


def cpu_identity(cpuinfo: str) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def vendor_peak(cpuinfo: str, cores: int) -> dict | None:
    """The vendor's theoretical dense bf16 peak of `cores` cores: FLOP/cycle x cores x clock, at the clock the OS
    reports (a VM reports its base clock) and at the family's highest boost clock (a VM hides its exact part, so
    this is the upper bound and MFU against it the lower one). None for a CPU not in `CPU_PEAKS`."""
    fields = cpu_identity(cpuinfo)
    known = CPU_PEAKS.get((fields.get("vendor_id", ""), int(fields.get("cpu family", -1))))
    if known is None:
        return None
    flop_per_cycle, boost_ghz, family = known
    reported_ghz = float(fields["cpu MHz"]) / 1000
    return {
        "cpu": f"{fields.get('model name')} ({family}, family {fields['cpu family']} model {fields.get('model')})",
        "cores": cores,
        "flop_per_cycle_per_core": flop_per_cycle,
        "reported_ghz": round(reported_ghz, 3),
        "max_boost_ghz": boost_ghz,
        "tflops_at_reported_clock": round(flop_per_cycle * cores * reported_ghz / 1000, 3),
        "tflops_at_max_boost": round(flop_per_cycle * cores * boost_ghz / 1000, 3),
    }


def spread(values: list[float], digits: int = 4) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("overrides", nargs="*")
    options = parser.parse_args()
    hardware = "hardware=gpu" if torch.cuda.is_available() else "hardware=cpu"
    overrides = [hardware, *MODEL, f"trainer.max_steps={options.steps}"]
    overrides.append(f"trainer.log_every_n_steps={options.log_every}")
    cfg = compose_config([*BENCHMARK_RUN, *overrides, *options.overrides])
    _, objects = train(cfg)
    monitor = next(c for c in objects["trainer"].callbacks if type(c).__name__ == "ThroughputMonitor")
    with (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row.get("perf/mfu")]
    intervals = [
        {key: round(float(row[key]), 4) for key in ("step", "perf/mfu", "perf/tflops", "perf/tokens_per_sec")}
        for row in rows
    ]
    timed = intervals[1:]
    report = {
        "measured_peak_tflops": round(monitor.peak_flops / 1e12, 3),
        "intervals": intervals,
        "mfu_vs_measured": spread([r["perf/mfu"] for r in timed]),
        "tokens_per_sec": spread([r["perf/tokens_per_sec"] for r in timed], 1),
        "achieved_tflops": spread([r["perf/tflops"] for r in timed]),
        "overrides": [*overrides, *options.overrides],
    }
    vendor = (
        vendor_peak(Path("/proc/cpuinfo").read_text(), len(os.sched_getaffinity(0)))
        if hardware.endswith("cpu")
        else None
    )
    if vendor is not None:
        achieved = report["achieved_tflops"]["median"]
        report["vendor_peak"] = vendor
        report["mfu_vs_vendor_at_reported_clock"] = round(achieved / vendor["tflops_at_reported_clock"], 4)
        report["mfu_vs_vendor_at_max_boost"] = round(achieved / vendor["tflops_at_max_boost"], 4)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
