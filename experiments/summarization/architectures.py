"""Encoder-decoder against decoder-only at equal training time, on the embedded summarization data.

    python -m experiments.summarization.architectures [--minutes 8]     # 3 runs, ~10 minutes each on 2 cores
    python -m experiments.summarization.architectures --table

Three models of one size (d 256, 4 heads, 6 layers in all, FFN 1,024, dropout 0.1), each from scratch on the task's
own 8,000-token BPE: the native Weaver (`model=weaver_small`, 3 + 3 layers), a BART-shaped HF encoder-decoder
(`model=bart_small_scratch`, 3 + 3) and a GPT-2-shaped HF decoder-only model (`model=gpt2_small_scratch`, 6 layers,
the document in the task's prompt and the synopsis its completion). Each is `python train.py task=summarization`
with its model, trained until the same `trainer.max_time` (the schedule planned over the same `trainer.max_steps`),
its best checkpoint then tested. Runs go one after another in fresh processes; the first in each run's order rotates
with `--offset`. Recorded under `architectures/<model>/`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.fresh_run import record_run, score, wall_time

RUNS = Path(__file__).resolve().parent / "architectures"
MODELS = ["weaver_small", "bart_small_scratch", "gpt2_small_scratch"]
METRICS = ("test/rouge1", "test/rouge2", "test/rougeL")


def table() -> str:
    lines = [
        "| model | R-1 | R-2 | R-L | steps trained | real tokens/s (median) | padding efficiency | peak RSS | wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model in MODELS:
        path = RUNS / model / "metrics.json"
        if not path.is_file():
            continue
        run = json.loads(path.read_text())
        scores = " | ".join(score(run["metrics"].get(name)) for name in METRICS)
        lines.append(
            f"| {model} | {scores} | {run['trained_steps']} | {run.get('median_tokens_per_sec', 0):,.0f} | "
            f"{score(run.get('median_padding_efficiency'))} | {run['peak_rss_mb']:,.0f} MB | "
            f"{wall_time(run['wall_seconds'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=8, help="training time of every run")
    parser.add_argument("--max-steps", type=int, default=2000, help="the schedule's planned length, the same for all")
    parser.add_argument("--offset", type=int, default=0, help="rotate the order of the runs")
    parser.add_argument("--table", action="store_true", help="print the recorded runs' table and stop")
    options = parser.parse_args()
    if not options.table:
        shift = options.offset % len(MODELS)
        for model in MODELS[shift:] + MODELS[:shift]:
            overrides = [
                "task=summarization",
                f"model={model}",
                f"trainer.max_time=00:00:{options.minutes:02d}:00",
                f"trainer.max_steps={options.max_steps}",
            ]
            record_run(overrides, RUNS / model)
    print(table())


if __name__ == "__main__":
    main()
