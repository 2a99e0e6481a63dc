"""The CPU protocol's tables (experiments/benchmarks/README.md), from the JSON reports `cpu_protocol.sh` wrote.

python -m experiments.benchmarks.protocol_report [--folder experiments/benchmarks/cpu_protocol]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ratio_cell(summary: dict) -> str:
    """The median, the min-max over the rounds and the verdict."""
    verdict = f" — {summary['verdict']}" if "verdict" in summary else ""
    return f"{summary['median']:.2f}x ({summary['min']:.2f}-{summary['max']:.2f}){verdict}"


def rounds_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def training(report: dict) -> str:
    speeds, ratios = report["tokens_per_sec"], report["ratios"]
    rows = []
    for index, weaver in enumerate(speeds["weaver"]):
        cells = [f"{index + 1}", f"{weaver:,.0f}"]
        for system in ("bart_same", "t5_same", "bart_own", "t5_own"):
            cells.append(f"{speeds[system][index]:,.0f} ({weaver / speeds[system][index]:.2f}x)")
        rows.append(cells)
    header = [
        "round",
        "Weaver",
        "BART, same batches",
        "T5, same batches",
        "BART, group_by_length",
        "T5, group_by_length",
    ]
    summary = [
        ["", "**Weaver / HF**", *[ratio_cell(ratios[f"weaver_over_{s}"]) for s in ("bart_same", "t5_same")]]
        + [ratio_cell(ratios[f"weaver_over_{s}"]) for s in ("bart_own", "t5_own")]
    ]
    return rounds_table(header, rows + summary)


def overhead(report: dict) -> str:
    rows = []
    wall, cpu = report["wall_ms_per_step"], report["cpu_ms_per_step"]
    for index, (raw, lightning) in enumerate(zip(wall["raw"], wall["lightning"], strict=True)):
        rows.append([f"{index + 1}", f"{raw:.1f}", f"{lightning:.1f}", f"{lightning / raw:.3f}"])
    table = rounds_table(["round", "plain loop (ms/step)", "Lightning (ms/step)", "Lightning / plain"], rows)
    lines = [table, ""]
    for name, clock in (("wall", wall), ("process CPU", cpu)):
        summary = clock["lightning_over_raw"]
        lines.append(
            f"- {name} time: median {summary['median']:.3f} ({summary['min']:.3f}-{summary['max']:.3f}), "
            f"mean {clock['mean_ratio']:.3f}, total-time ratio {clock['total_time_ratio']:.3f} "
            f"— ≤ 1.03: {summary['verdict']}"
        )
    if "profile_ms_per_step" in report:
        profile = report["profile_ms_per_step"]
        lines += ["", rounds_table(
            ["own time (cProfile)", "plain loop (ms/step)", "Lightning (ms/step)", "added"],
            [[group, f"{v['raw']:.2f}", f"{v['lightning']:.2f}", f"{v['added']:+.2f}"] for group, v in profile.items()],
        )]  # fmt: skip
    return "\n".join(lines)


def generation(report: dict) -> str:
    speeds = report["generated_tokens_per_sec"]
    rows = [
        [f"{index + 1}", f"{weaver:,.0f}", f"{hf:,.0f}", f"{weaver / hf:.2f}"]
        for index, (weaver, hf) in enumerate(zip(speeds["weaver"], speeds["hf_bart"], strict=True))
    ]
    rows.append(["", "", "**Weaver / HF**", ratio_cell(report["weaver_over_hf"])])
    return rounds_table(["round", "Weaver (tokens/s)", "HF BART `generate` (tokens/s)", "ratio"], rows)


def padding(reports: dict[str, dict]) -> str:
    rows = []
    for task, report in reports.items():
        cells = [task, f"{report['max_tokens']:,}", f"{report['batch_size']}"]
        for side in ("token_budget", "group_by_length", "fixed_size"):
            low, high = report[side]["both_min"], report[side]["both_max"]
            same = f"{100 * low:.1f}" == f"{100 * high:.1f}"
            cells.append(f"{100 * low:.1f}%" if same else f"{100 * low:.1f}-{100 * high:.1f}%")
        ratios = report["token_budget_over_group_by_length"]
        low_ratio, high_ratio = f"{min(ratios):.2f}", f"{max(ratios):.2f}"
        cells.append(f"{low_ratio}x" if low_ratio == high_ratio else f"{low_ratio}-{high_ratio}x")
        rows.append(cells)
    header = [
        "task",
        "`max_tokens`",
        "HF batch size",
        "token budget",
        "`group_by_length`",
        "random",
        "budget / grouped",
    ]
    return rounds_table(header, rows)


def mfu(reports: dict[str, dict]) -> str:
    rows = []
    for name, report in reports.items():
        measured, tokens = report["mfu_vs_measured"], report["tokens_per_sec"]
        vendor = report.get("vendor_peak")
        cells = [
            name,
            f"{report['measured_peak_tflops']:.2f}",
            f"{100 * measured['median']:.1f}% ({100 * measured['min']:.1f}-{100 * measured['max']:.1f})",
            f"{report['achieved_tflops']['median']:.3f}",
        ]
        if vendor:
            boost, base = report["mfu_vs_vendor_at_max_boost"], report["mfu_vs_vendor_at_reported_clock"]
            cells.append(f"{100 * boost:.1f}% / {100 * base:.1f}%")
        cells.append(f"{tokens['median']:,.0f} ({tokens['min']:,.0f}-{tokens['max']:,.0f})")
        rows.append(cells)
    header = ["run", "measured peak (TFLOP/s)", "MFU vs measured", "achieved TFLOP/s", "MFU vs vendor peak"]
    return rounds_table([*header, "real tokens/s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=HERE / "cpu_protocol")
    folder = parser.parse_args().folder

    def load(name: str) -> dict | None:
        path = folder / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() and path.stat().st_size else None

    sections = {
        "Training throughput": (training, load("train_throughput")),
        "Lightning overhead": (overhead, load("lightning_overhead")),
        "Generation": (generation, load("generation")),
    }
    for title, (render, report) in sections.items():
        if report is not None:
            print(f"### {title}\n\n{render(report)}\n")
    pads = {task: load(f"padding_{task}") for task in ("translation", "summarization", "dialogue")}
    if all(pads.values()):
        print(f"### Padding efficiency\n\n{padding(pads)}\n")
    mfus = {name: load(f"mfu_{name}") for name in ("small", "base", "big")}
    mfus = {f"weaver_{name}": report for name, report in mfus.items() if report is not None}
    if mfus:
        print(f"### MFU\n\n{mfu(mfus)}\n")


if __name__ == "__main__":
    main()
