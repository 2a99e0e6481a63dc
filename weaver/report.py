"""`python -m weaver.report <sweep or runs dir>` / `weaver-report`: compare runs from their own files.

Every folder below the given one that holds a `.hydra/config.yaml` is a run. From its files alone (no W&B account
needed): the command-line overrides, the monitored validation metric over steps (`csv/metrics.csv`), the final
metrics (`metrics.json`) and why a run failed (`run_info/error.txt`). Prints a table (overrides that differ between
runs, best and final validation value, test value; the best run starred) and writes PNG plots to `<dir>/report/`:
the validation metric against step for every run, and the best validation value against each swept hyperparameter.
Runs that monitor different metrics (or one metric in both directions) get a table each, and plots in a sub-folder
each, `<dir>/report/<metric>_<mode>/`: a best value is only compared with values of the same metric.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from weaver.errors import ERROR_FILE, FINISHED_IN  # noqa: E402


@dataclass
class RunRecord:
    path: Path
    name: str  # the path below the reported folder: tells apart runs of different sweeps (each has a `0`, `1`, ...)
    overrides: dict[str, str]
    metric: str  # the monitored validation metric, e.g. val/bleu
    mode: str  # max or min
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, value) at each validation
    final: dict[str, float] = field(default_factory=dict)  # metrics.json, when the run finished
    error: str | None = None  # run_info/error.txt, when the run failed

    @property
    def best(self) -> float | None:
        """A NaN validation (a diverged run) is no score: it must not win, and max/min with NaN is order-dependent."""
        values = [value for _, value in self.curve if not math.isnan(value)]
        return (max if self.mode == "max" else min)(values) if values else None

    @property
    def last(self) -> float | None:
        return self.curve[-1][1] if self.curve else None

    @property
    def test(self) -> float | None:
        return self.final.get(self.metric.replace("val/", "test/", 1))

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "finished" if self.final else "incomplete"


def read_run(path: Path, root: Path) -> RunRecord:
    config = OmegaConf.load(path / ".hydra" / "config.yaml")
    overrides_file = path / ".hydra" / "overrides.yaml"
    listed = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    overrides = dict(str(item).split("=", 1) for item in listed or [] if "=" in str(item))
    monitor = config.get("monitor") or {}
    name = path.relative_to(root).as_posix() if path != root else path.resolve().name
    run = RunRecord(path, name, overrides, str(monitor.get("metric", "val/loss")), str(monitor.get("mode", "min")))
    metrics_csv = path / "csv" / "metrics.csv"
    if metrics_csv.is_file():
        with metrics_csv.open(encoding="utf-8") as file:
            # Lightning logs a row before its step count goes up: a validation after the 300th optimizer step (whose
            # checkpoint is step000300) has step 299.
            run.curve = [
                (int(row["step"]) + 1, float(row[run.metric])) for row in csv.DictReader(file) if row.get(run.metric)
            ]
    metrics_json = path / "metrics.json"
    if metrics_json.is_file():
        run.final = json.loads(metrics_json.read_text())["metrics"]
    error_file = path / ERROR_FILE
    if error_file.is_file():
        run.error = error_file.read_text(encoding="utf-8").strip()
    return run


def find_runs(root: Path) -> list[RunRecord]:
    """Every run under `root`; a sweep job that `resume=auto` found finished already is read from that run, unless
    it is under `root` too."""
    paths = sorted({config.parent.parent for config in root.rglob(".hydra/config.yaml")})
    under_root = {path.resolve() for path in paths}  # `finished_in` holds an absolute path; `root` may be relative
    runs = []
    for path in paths:
        if path.parent.name == "report":
            continue
        finished_in = path / FINISHED_IN
        if not finished_in.is_file():
            runs.append(read_run(path, root))
            continue
        finished = Path(finished_in.read_text().strip())
        if finished.resolve() not in under_root and (finished / ".hydra" / "config.yaml").is_file():
            run = read_run(finished, finished.parent)
            run.name = f"{read_run(path, root).name} (finished in {finished})"
            runs.append(run)
    return runs


def group_by_monitor(runs: list[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    """Runs by (metric, mode): a best value only compares with values of the same metric, taken the same way."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault((run.metric, run.mode), []).append(run)
    return groups


def swept_keys(runs: list[RunRecord]) -> list[str]:
    """Overrides whose value is not the same in every run."""
    keys = sorted({key for run in runs for key in run.overrides})
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def best_run(runs: list[RunRecord]) -> RunRecord | None:
    """The best of runs that monitor one metric the same way."""
    scored = [run for run in runs if run.best is not None]
    if not scored:
        return None
    return (max if scored[0].mode == "max" else min)(scored, key=lambda run: run.best)


def label(run: RunRecord, keys: list[str]) -> str:
    return ", ".join(f"{key}={run.overrides.get(key, '-')}" for key in keys) or run.name


def as_number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def print_table(runs: list[RunRecord], keys: list[str], console: Console) -> None:
    """One table for runs that monitor one metric the same way, its best run starred."""
    winner = best_run(runs)
    metric = runs[0].metric
    table = Table(title=f"{len(runs)} runs, monitored {metric} ({runs[0].mode})")
    for column in ["", "run", *keys, f"best {metric}", f"final {metric}", metric.replace("val/", "test/", 1), "status"]:
        table.add_column(column)
    for run in runs:
        cells = [f"{value:.4g}" if value is not None else "-" for value in (run.best, run.last, run.test)]
        mark = "★" if run is winner else ""
        table.add_row(mark, run.name, *[run.overrides.get(k, "-") for k in keys], *cells, run.status)
    console.print(table)
    for run in runs:
        if run.error is not None:
            console.print(f"Run {run.name} failed: {run.error}")
    if winner is not None:
        console.print(f"Best run: {winner.path} ({label(winner, keys)})")


def curves_figure(runs: list[RunRecord], keys: list[str]) -> Figure:
    """The monitored metric against step, one labelled line per run."""
    figure, axes = plt.subplots(figsize=(8, 5))
    for run in runs:
        if run.curve:
            steps, values = zip(*run.curve, strict=True)
            axes.plot(steps, values, marker="o", label=label(run, keys))
    axes.set_xlabel("training step")
    axes.set_ylabel(runs[0].metric)
    axes.set_title(f"{runs[0].metric} during training")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def parameter_figure(runs: list[RunRecord], key: str) -> Figure:
    """Each run's best monitored value against its value of `key` (log scale for wide numeric ranges)."""
    scored = [run for run in runs if run.best is not None]
    values = [run.overrides.get(key, "-") for run in scored]
    numbers = [as_number(value) for value in values]
    figure, axes = plt.subplots(figsize=(6, 4))
    if all(number is not None for number in numbers):
        axes.scatter(numbers, [run.best for run in scored])
        if min(numbers) > 0 and max(numbers) / min(numbers) >= 100:
            axes.set_xscale("log")
    else:
        categories = sorted(set(values))
        axes.scatter([categories.index(v) for v in values], [run.best for run in scored])
        axes.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    axes.set_xlabel(key)
    axes.set_ylabel(f"best {scored[0].metric}" if scored else "best")
    axes.set_title(f"best {scored[0].metric if scored else ''} by {key}")
    axes.grid(alpha=0.3)
    return figure


def save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_plots(runs: list[RunRecord], keys: list[str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [save(curves_figure(runs, keys), folder / "curves.png")]
    for key in keys:
        written.append(save(parameter_figure(runs, key), folder / f"best_by_{key.replace('/', '_')}.png"))
    return written


def default_console() -> Console:
    """A terminal keeps its width; piped or redirected output (a CI log, `> report.txt`) is as wide as the table, where
    rich's 80 columns would cut values ("0.0021…"). `COLUMNS`, when set, still rules, as everywhere in rich."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 100_000
    return console


def report(root: Path, console: Console | None = None) -> list[Path]:
    """Print a table per monitored metric for the runs under `root` and write the plots; returns the PNG paths."""
    console = console or default_console()
    runs = find_runs(root)
    if not runs:
        raise SystemExit(f"Error: no runs (folders with .hydra/config.yaml) under '{root}'.")
    groups = group_by_monitor(runs)
    written = []
    for (metric, mode), group in groups.items():
        keys = swept_keys(group)
        print_table(group, keys, console)
        folder = root / "report"
        if len(groups) > 1:  # a sub-folder per metric, or each group's plots would overwrite the last one's
            folder /= f"{metric.replace('/', '_')}_{mode}"
        written += write_plots(group, keys, folder)
    console.print(f"Plots: {', '.join(str(p) for p in written)}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Compare the runs of a sweep (or any folder of runs).")
    parser.add_argument("root", type=Path, help="a multirun/sweep folder, or any folder holding run folders")
    report(parser.parse_args().root)


if __name__ == "__main__":
    main()
