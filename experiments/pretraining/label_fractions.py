"""Pretrained vs from scratch on 10% and 100% of each task's training labels, at equal wall time.

    python -m experiments.pretraining.label_fractions --cpu 1       # about 80 minutes; one core, one thread
    python -m experiments.pretraining.label_fractions --table       # the table of the recorded runs

Each run is `python train.py` in a fresh process with the task's default recipe (`model=weaver_small_pretrained`, or
`model=weaver_small` from scratch), `data.train_fraction` of the train rows, and training stopped by the same
`trainer.max_time` for both starts; the best checkpoint is then tested as in every run. All runs are pinned to one
core with one thread (`--cpu`), so the other core's work cannot change how much either side trains. A run's
`metrics.json`, composed config and validation curve are kept under `label_fractions/<task>/<fraction>_<start>/`.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

from experiments.fresh_run import record_run, score, wall_time

HERE = Path(__file__).resolve().parent
RUNS = HERE / "label_fractions"
STARTS = {"pretrained": "weaver_small_pretrained", "scratch": "weaver_small"}
FRACTIONS = (0.1, 1.0)


@dataclass(frozen=True)
class TaskBudget:
    """Training time of each run of a task, how often it validates (so the best checkpoint is recent when time is
    up), and the test metrics its table shows."""

    minutes: int
    val_check_interval: int
    metrics: tuple[str, ...]


TASKS = {
    "translation": TaskBudget(5, 100, ("test/bleu", "test/chrf")),
    "summarization": TaskBudget(4, 100, ("test/rouge1", "test/rouge2", "test/rougeL")),
    "dialogue": TaskBudget(6, 200, ("test/f1", "test/distinct_2", "test/bleu")),
}


def run(task: str, fraction: float, start: str, cpu: int) -> None:
    budget = TASKS[task]
    overrides = [
        f"task={task}",
        f"model={STARTS[start]}",
        f"data.train_fraction={fraction}",
        f"trainer.max_time=00:00:{budget.minutes:02d}:00",
        f"trainer.val_check_interval={budget.val_check_interval}",
    ]
    record_run(overrides, RUNS / task / f"{fraction:g}_{start}", cpu)


def table(task: str) -> str:
    metrics = TASKS[task].metrics
    lines = [
        f"| labels | start | {' | '.join(metrics)} | steps trained | best checkpoint's step | wall time |",
        "| --- | --- |" + " --- |" * (len(metrics) + 3),
    ]
    for fraction in FRACTIONS:
        for start in STARTS:
            folder = RUNS / task / f"{fraction:g}_{start}"
            if not folder.is_dir():
                continue
            recorded = json.loads((folder / "metrics.json").read_text())
            scores, seconds = recorded["metrics"], recorded["wall_seconds"]
            curve = list(csv.DictReader((folder / "validation_curve.csv").open()))
            values = " | ".join(score(scores.get(name)) for name in metrics)
            wall = wall_time(seconds)
            lines.append(
                f"| {fraction:.0%} | {start} | {values} | {recorded['trained_steps']} | {best_step(curve, folder)} "
                f"| {wall} |"
            )
    return "\n".join(lines)


def best_step(curve: list[dict[str, str]], folder: Path) -> str:
    from omegaconf import OmegaConf

    monitor = OmegaConf.load(folder / "config.yaml").monitor
    scored = [row for row in curve if row.get(monitor.metric)]
    if not scored:
        return "–"
    pick = max if monitor.mode == "max" else min
    return pick(scored, key=lambda row: float(row[monitor.metric]))["step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", type=int, default=1, help="the core every run is pinned to")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--table", action="store_true", help="print the tables of the recorded runs and stop")
    args = parser.parse_args()
    if not args.table:
        for task in args.tasks:
            for fraction in FRACTIONS:
                for start in STARTS:
                    run(task, fraction, start, args.cpu)
    for task in args.tasks:
        print(f"\n{task}\n\n{table(task)}")


if __name__ == "__main__":
    main()
