"""The sweep report, from run folders alone: table, best run, and legible plots."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from weaver.report import curves_figure, find_runs, parameter_figure, report, swept_keys


def fake_run(folder: Path, lr: str, curve: list[float], finished: bool = True) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("monitor:\n  metric: val/bleu\n  mode: max\n")
    (folder / ".hydra" / "overrides.yaml").write_text(f"- task=translation\n- optimizer.lr={lr}\n")
    (folder / "csv").mkdir()
    # A training row (no validation value) first, then one row per validation, every 100 steps, at the step Lightning
    # logs it: its count before the step's increment.
    rows = ["epoch,step,train/loss,val/bleu", "0,5,7.1,", *(f"0,{100 * (i + 1) - 1},,{v}" for i, v in enumerate(curve))]
    (folder / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    if finished:
        (folder / "metrics.json").write_text(
            json.dumps({"metrics": {"val/bleu": curve[-1], "test/bleu": curve[-1] - 1}})
        )
    return folder


def test_report_marks_the_best_run_and_writes_plots(tmp_path: Path) -> None:
    fake_run(tmp_path / "0", "1e-4", [1.0, 2.0, 3.0])
    fake_run(tmp_path / "1", "1e-3", [2.0, 6.0, 5.0])
    fake_run(tmp_path / "2", "1e-2", [0.5], finished=False)
    console = Console(record=True, width=200)
    written = report(tmp_path, console)
    text = console.export_text()
    best_line = next(line for line in text.splitlines() if "★" in line)
    assert "1e-3" in best_line and "6" in best_line and "incomplete" in text
    assert [p.name for p in written] == ["curves.png", "best_by_optimizer.lr.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_a_failed_run_is_reported_with_its_reason(tmp_path: Path) -> None:
    fake_run(tmp_path / "0", "1e-3", [2.0, 6.0])
    failed = fake_run(tmp_path / "1", "-1", [], finished=False)
    (failed / "run_info").mkdir()
    (failed / "run_info" / "error.txt").write_text("optimizer: Invalid learning rate: -1")
    console = Console(record=True, width=200)
    report(tmp_path, console)
    text = console.export_text()
    assert [run.status for run in find_runs(tmp_path)] == ["finished", "failed"]
    assert "Run 1 failed: optimizer: Invalid learning rate: -1" in text


def test_curves_count_optimizer_steps_as_the_checkpoints_name_them(tmp_path: Path) -> None:
    fake_run(tmp_path / "0", "1e-3", [1.0, 2.0])
    assert find_runs(tmp_path)[0].curve == [(100, 1.0), (200, 2.0)]  # step000100, step000200


def test_plots_have_one_line_per_run_and_labelled_axes(tmp_path: Path) -> None:
    for i, lr in enumerate(["1e-4", "1e-3"]):
        fake_run(tmp_path / str(i), lr, [1.0 + i, 2.0 + i])
    runs = find_runs(tmp_path)
    keys = swept_keys(runs)
    assert keys == ["optimizer.lr"]
    axes = curves_figure(runs, keys).axes[0]
    assert len(axes.lines) == 2 and axes.get_xlabel() == "training step" and axes.get_ylabel() == "val/bleu"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["optimizer.lr=1e-4", "optimizer.lr=1e-3"]
    axes = parameter_figure(runs, "optimizer.lr").axes[0]
    assert axes.get_xlabel() == "optimizer.lr" and axes.get_ylabel() == "best val/bleu"
