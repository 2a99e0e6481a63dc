"""Each `peft=` method on a small HF encoder-decoder and a small decoder-only model: trainable parameters, training
tokens/s and peak memory.

    python -m experiments.peft.methods              # 14 short runs, ~8 minutes on 2 cores
    python -m experiments.peft.methods --methods adapter   # only these methods' runs, the others' records kept
    python -m experiments.peft.methods --table

The backbones are `model=bart_small_scratch` and `model=gpt2_small_scratch` (d 256, 6 layers in all; random weights:
the figures measure cost, not quality), trained on the embedded summarization data by `python train.py` in a fresh
process for `--steps` steps each with the task's token-budget batches, no validation and no test. Tokens/s is the
median of the run's logged intervals after the first (`perf/tokens_per_sec`: real prompt/source and completion/target
tokens); peak memory is the process's peak resident set, which also holds the data and tokenizer (the same for every
method of a backbone). Recorded under `methods/<backbone>/<method>/`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.fresh_run import record_run, score

RUNS = Path(__file__).resolve().parent / "methods"
BACKBONES = ["bart_small_scratch", "gpt2_small_scratch"]
METHODS = ["none", "lora", "adalora", "adapter", "ia3", "prefix", "prompt"]
# AdaLoRA's schedule (warm-up and final steps) scaled to a short run.
METHOD_SETTINGS = {"adalora": ["peft.tinit=5", "peft.tfinal=10", "peft.deltaT=5"]}


def table() -> str:
    lines = [
        "| backbone | peft | trainable parameters | share of all | real tokens/s (median) | peak RSS |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for backbone in BACKBONES:
        for method in METHODS:
            path = RUNS / backbone / method / "metrics.json"
            if not path.is_file():
                continue
            run = json.loads(path.read_text())
            share = run["params_trainable"] / run["params_total"]
            lines.append(
                f"| {backbone} | {method} | {run['params_trainable']:,} | {score(share)} | "
                f"{run.get('median_tokens_per_sec', 0):,.0f} | {run['peak_rss_mb']:,.0f} MB |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS, help="run only these methods")
    parser.add_argument("--table", action="store_true", help="print the recorded runs' table and stop")
    options = parser.parse_args()
    if not options.table:
        for backbone in BACKBONES:
            for method in options.methods:
                overrides = [
                    "task=summarization",
                    f"model={backbone}",
                    f"peft={method}",
                    f"trainer.max_steps={options.steps}",
                    f"trainer.val_check_interval={options.steps + 1}",
                    "trainer.log_every_n_steps=10",
                    "test=false",
                    *METHOD_SETTINGS.get(method, []),
                ]
                record_run(overrides, RUNS / backbone / method)
    print(table())


if __name__ == "__main__":
    main()
