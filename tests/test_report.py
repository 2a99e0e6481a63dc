"""The sweep report, from run folders alone: table, best run, and legible plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from weaver.errors import FINISHED_IN
from weaver.report import curves_figure, default_console, find_runs, parameter_figure, report, swept_keys


def fake_run(
    folder: Path, lr: str, curve: list[float], finished: bool = True, metric: str = "val/bleu", mode: str = "max"
) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"monitor:\n  metric: {metric}\n  mode: {mode}\n")
    (folder / ".hydra" / "overrides.yaml").write_text(f"- task=translation\n- optimizer.lr={lr}\n")
    (folder / "csv").mkdir()
    # A training row (no validation value) first, then one row per validation, every 100 steps, at the step Lightning
    # logs it: its count before the step's increment.
    rows = [
        f"epoch,step,train/loss,{metric}",
        "0,5,7.1,",
        *(f"0,{100 * (i + 1) - 1},,{v}" for i, v in enumerate(curve)),
    ]
    (folder / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    if finished:
        test_metric = metric.replace("val/", "test/", 1)
        (folder / "metrics.json").write_text(json.dumps({"metrics": {metric: curve[-1], test_metric: curve[-1] - 1}}))
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


def test_a_rerun_sweeps_skipped_job_counts_once_under_a_relative_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished = fake_run(tmp_path / "sweeps" / "first" / "0", "1e-3", [2.0, 6.0])
    skipped = fake_run(tmp_path / "sweeps" / "again" / "0", "1e-3", [], finished=False)
    (skipped / FINISHED_IN).parent.mkdir()
    (skipped / FINISHED_IN).write_text(str(finished))  # as `resume=auto` writes it: an absolute path
    monkeypatch.chdir(tmp_path)
    assert [run.path.resolve() for run in find_runs(Path("sweeps"))] == [finished]
    assert [run.path for run in find_runs(Path("sweeps") / "again")] == [finished]  # read from where it finished


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


def test_runs_monitoring_different_metrics_get_a_table_and_a_best_run_each(tmp_path: Path) -> None:
    day = tmp_path / "translation" / "2026-12-07"
    grid, search = day / "13-00-00", day / "14-00-00"  # a grid sweep on val/bleu, an Optuna search on val/loss
    fake_run(grid / "0", "1e-4", [10.0, 20.0])
    fake_run(grid / "1", "1e-3", [30.0, 25.0])
    fake_run(search / "0", "2e-4", [3.0, 1.5], metric="val/loss", mode="min")
    fake_run(search / "1", "2e-3", [40.0, 50.0], metric="val/loss", mode="min")  # the highest value, not the best
    console = Console(record=True, width=200)
    written = report(tmp_path, console)
    text = console.export_text()
    assert "2 runs, monitored val/bleu (max)" in text and "2 runs, monitored val/loss (min)" in text
    starred = [line for line in text.splitlines() if "★" in line]
    assert len(starred) == 2
    assert "translation/2026-12-07/13-00-00/1" in starred[0] and "30" in starred[0]
    assert "translation/2026-12-07/14-00-00/0" in starred[1] and "1.5" in starred[1]
    assert sorted(p.relative_to(tmp_path / "report").as_posix() for p in written) == [
        "val_bleu_max/best_by_optimizer.lr.png",
        "val_bleu_max/curves.png",
        "val_loss_min/best_by_optimizer.lr.png",
        "val_loss_min/curves.png",
    ]


def test_nan_validations_are_no_best_value_and_never_starred(tmp_path: Path) -> None:
    nan = float("nan")
    fake_run(tmp_path / "0", "1e-2", [nan])  # diverged at once
    fake_run(tmp_path / "1", "1e-3", [nan, 2.0])
    fake_run(tmp_path / "2", "1e-4", [1.0, nan, 3.0])
    assert [run.best for run in find_runs(tmp_path)] == [None, 2.0, 3.0]
    assert math.isnan(find_runs(tmp_path)[0].last)
    console = Console(record=True, width=200)
    report(tmp_path, console)
    best_line = next(line for line in console.export_text().splitlines() if "★" in line)
    assert "1e-4" in best_line


def test_piped_output_keeps_every_digit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    sweep = tmp_path / "multirun" / "translation" / "2026-12-07" / "13-00-00"
    fake_run(sweep / "0", "0.0021345678", [1.0, 2.0])
    fake_run(sweep / "1", "0.0031345678", [2.0, 3.0])
    report(tmp_path)  # stdout is captured: not a terminal
    out = capsys.readouterr().out
    assert "0.0021345678" in out and "0.0031345678" in out and "…" not in out
    assert "multirun/translation/2026-12-07/13-00-00/1" in out


def test_a_terminal_keeps_its_width_and_columns_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert default_console().width == Console().width
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    monkeypatch.setenv("COLUMNS", "60")
    assert default_console().width == 60
