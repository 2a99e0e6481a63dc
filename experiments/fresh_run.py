"""One `python train.py` run in a fresh process, recorded: what the experiments' comparison scripts share.

`record_run` runs train.py with the given overrides (CSV logging, its run directory a temporary one), optionally
pinned to one core with one thread, and keeps under `target`: `metrics.json` (the run's final metrics, plus its
wall seconds, trained steps, peak resident memory, total and trainable parameters, and the median real tokens/s
and padding efficiency of its logged intervals after the first), `config.yaml` (the composed config) and
`validation_curve.csv` (every validation's step and metrics).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def record_run(overrides: list[str], target: Path, cpu: int | None = None) -> dict[str, Any]:
    """Train with `overrides` in a fresh process (on core `cpu` alone, one thread, when given) and record it under
    `target`, replacing what was there; returns the recorded metrics."""
    with tempfile.TemporaryDirectory() as output:
        command = [sys.executable, "train.py", *overrides, "logger=csv", f"hydra.run.dir={output}"]
        env = dict(os.environ)
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
            env["OMP_NUM_THREADS"] = "1"
        began = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - began
        if os.waitstatus_to_exitcode(status):
            raise RuntimeError(f"{' '.join(command)} failed with exit status {os.waitstatus_to_exitcode(status)}")
        logged = [row for log in Path(output).rglob("metrics.csv") for row in csv.DictReader(log.open())]
        recorded = json.loads((Path(output) / "metrics.json").read_text())
        recorded["wall_seconds"] = round(seconds, 1)
        recorded["trained_steps"] = max(int(row["step"]) for row in logged if row.get("train/loss")) + 1
        recorded["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # kilobytes on Linux
        for hparams in Path(output).rglob("hparams.yaml"):  # the parameter counts the run logged at its start
            counts = yaml.safe_load(hparams.read_text())
            recorded.update({key.removeprefix("model/"): counts[key] for key in counts if key.startswith("model/")})
        for name in ("perf/tokens_per_sec", "perf/padding_efficiency"):  # over the logged intervals but the first
            values = [float(row[name]) for row in logged if row.get(name)][1:]
            if values:
                recorded[f"median_{name.removeprefix('perf/')}"] = round(statistics.median(values), 4)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        (target / "metrics.json").write_text(json.dumps(recorded, indent=2) + "\n")
        shutil.copy(Path(output) / ".hydra" / "config.yaml", target / "config.yaml")
        write_validation_curve(logged, target / "validation_curve.csv")
        return recorded


def write_validation_curve(logged: list[dict[str, str]], path: Path) -> None:
    """The CSV logger's validation rows (step and every val/ metric)."""
    rows = [row for row in logged if row.get("val/loss")]
    names = ["step", *sorted({key for row in rows for key in row if key.startswith("val/") and row[key]})]
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def score(value: float | None) -> str:
    """Metrics in points (BLEU, ROUGE, F1) to two decimals, ratios (distinct-n, efficiencies) to three."""
    if value is None:
        return "–"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def wall_time(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
