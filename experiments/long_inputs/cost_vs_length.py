"""Cost against input length: weaver_small reading one long source with memory and recall (per-layer keys;
folded keys; windows recomputed in backward), beside the same model with full attention (one pass, positions as long
as the source).

Each (system, length) runs in a fresh process, the systems alternating within each round, the lengths in turn; a
process measures, on random token ids in bf16 autocast as in training:
- generation: greedy decoding of 1 and of 33 tokens after a warm-up: encoding is the first's time, and the time
  per generated token the difference over 32;
- training: forward and backward of one (source, 32-token target) pair, the mean of 2 steps after one warm-up;
- peak RSS after generation and after training (the process's high-water mark, so training's includes generation's).
A process that runs past `--timeout` seconds or is killed for memory is recorded as such: full attention's cost
grows with the square of the length.

    python -m experiments.long_inputs.cost_vs_length --rounds 5 --systems memory full --lengths 1024 4096 16384
    python -m experiments.long_inputs.cost_vs_length --rounds 1 --lengths 65536
    python -m experiments.long_inputs.cost_vs_length --report     # the table and cost_vs_length.png
    python -m experiments.long_inputs.cost_vs_length --measure --system memory --length 4096   # one process
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from weaver.models import build_weaver

SYSTEMS = ("memory", "memory_folded", "memory_checkpointed", "full")
LENGTHS = (1024, 4096, 16384, 65536)
SMALL = dict(d_model=256, num_heads=4, num_encoder_layers=3, num_decoder_layers=3, ffn_dim=1024, dropout=0.1)
VOCAB, TARGET_LENGTH, NEW_TOKENS = 8000, 32, 32
MEMORY = {"window": 256, "stride": 128, "top_k": 16}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(system: str, length: int) -> dict[str, float]:
    torch.manual_seed(0)
    if system == "full":
        model = build_weaver(VOCAB, max_positions=max(length, TARGET_LENGTH + NEW_TOKENS), **SMALL)
    else:
        memory = {**MEMORY, "fold_keys": system == "memory_folded"}
        checkpointed = system == "memory_checkpointed"  # each batch of windows recomputed in backward
        model = build_weaver(VOCAB, max_positions=512, memory=memory, activation_checkpointing=checkpointed, **SMALL)
    source = torch.randint(3, VOCAB, (1, length))
    mask = torch.ones_like(source)
    target = torch.randint(3, VOCAB, (1, TARGET_LENGTH))
    figures: dict[str, float] = {}
    model.eval()

    def generate_seconds(new_tokens: int) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.generate(source, mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        return time.perf_counter() - start

    generate_seconds(1)  # warm-up: the first pass pays for allocations
    whole = generate_seconds(NEW_TOKENS + 1)
    figures["encode_s"] = generate_seconds(1)  # encoding and one decoding step
    figures["decode_ms_per_token"] = 1000 * (whole - figures["encode_s"]) / NEW_TOKENS
    figures["generate_peak_rss_mb"] = peak_rss_mb()
    model.train()
    steps = []
    for _ in range(3):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(source, mask, target).float().logsumexp(-1).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        steps.append(time.perf_counter() - start)
    figures["train_step_s"] = statistics.mean(steps[1:])
    figures["train_peak_rss_mb"] = peak_rss_mb()
    return figures


def run_rounds(
    rounds: int, systems: list[str], lengths: list[int], timeout: float, output: Path, first_round: int = 0
) -> None:
    """Append one record per process to `output/rounds.jsonl`. A system that failed at a length (time, memory) is
    not run at that length or longer ones again. Rounds are numbered from `first_round` (to add rounds to a log)."""
    output.mkdir(parents=True, exist_ok=True)
    log = output / "rounds.jsonl"
    failed_at: dict[str, int] = {}
    with log.open("a") as file:
        for round_index in range(first_round, first_round + rounds):
            for length in lengths:
                # Alternate which system goes first, so drift in the machine's speed is shared.
                order = systems if round_index % 2 == 0 else list(reversed(systems))
                for system in [s for s in order if length < failed_at.get(s, length + 1)]:
                    record = {"round": round_index, "system": system, "length": length}
                    command = [sys.executable, "-m", __spec__.name, "--measure", "--system", system]
                    try:
                        done = subprocess.run(
                            [*command, "--length", str(length)], capture_output=True, text=True, timeout=timeout
                        )
                        if done.returncode == 0:
                            record.update(json.loads(done.stdout.strip().splitlines()[-1]))
                        else:
                            record["failed"] = f"exit {done.returncode}: {done.stderr.strip()[-200:]}"
                    except subprocess.TimeoutExpired:
                        record["failed"] = f"over {timeout:.0f} s"
                    if "failed" in record:
                        failed_at[system] = length
                    print(json.dumps(record), flush=True)
                    file.write(json.dumps(record) + "\n")
                    file.flush()


FIGURES = ("encode_s", "decode_ms_per_token", "train_step_s", "generate_peak_rss_mb", "train_peak_rss_mb")


def report(output: Path) -> str:
    """A Markdown table of every (system, length): each figure's median and range over its rounds, the full /
    memory ratio per round (median and range) where both finished, and `cost_vs_length.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (output / "rounds.jsonl").open()]
    done: dict[tuple[str, int], list[dict]] = {}
    failures: dict[tuple[str, int], str] = {}
    for record in records:
        key = (record["system"], record["length"])
        if "failed" in record:
            failures[key] = record["failed"]
        else:
            done.setdefault(key, []).append(record)

    def spread(values: list[float], digits: int) -> str:
        return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    lines = [
        "| system | length | rounds | encode s | decode ms/token | train step s | peak RSS generating MB "
        "| peak RSS training MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for system, length in sorted({*done, *failures}, key=lambda key: (key[1], SYSTEMS.index(key[0]))):
        rows = done.get((system, length), [])
        if not rows:
            lines.append(f"| {system} | {length:,} | 0 | {failures[(system, length)]} | | | | |")
            continue
        cells = [spread([row[name] for row in rows], 0 if "rss" in name else 2) for name in FIGURES]
        lines.append(f"| {system} | {length:,} | {len(rows)} | " + " | ".join(cells) + " |")
    ratios = ["", "| length | full / memory, train step | full / memory, decode per token |", "| --- | --- | --- |"]
    for length in sorted({length for _, length in done}):
        memory = {row["round"]: row for row in done.get(("memory", length), [])}
        full = {row["round"]: row for row in done.get(("full", length), [])}
        paired = sorted(set(memory) & set(full))
        if paired:
            cells = [
                spread([full[r][name] / memory[r][name] for r in paired], 2)
                for name in ("train_step_s", "decode_ms_per_token")
            ]
            ratios.append(f"| {length:,} | " + " | ".join(cells) + " |")
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for system in SYSTEMS:
        lengths = sorted(length for name, length in done if name == system)
        if not lengths:
            continue
        for axis, name in zip(axes, ("train_peak_rss_mb", "train_step_s", "decode_ms_per_token"), strict=True):
            axis.plot(
                lengths, [statistics.median(r[name] for r in done[(system, n)]) for n in lengths], "o-", label=system
            )
            axis.set(xscale="log", yscale="log", xlabel="source tokens", title=name)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(output / "cost_vs_length.png", dpi=110)
    return "\n".join(lines + ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="measure one (system, length) in this process")
    parser.add_argument("--report", action="store_true", help="tabulate and plot the rounds in --output")
    parser.add_argument("--system", choices=SYSTEMS, default="memory")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--first-round", type=int, default=0, help="the first round's number (adding rounds to a log)")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--output", type=Path, default=Path("experiments/long_inputs/cost_vs_length"))
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.system, args.length)))
    elif args.report:
        print(report(args.output))
    else:
        run_rounds(args.rounds, args.systems, args.lengths, args.timeout, args.output, args.first_round)


if __name__ == "__main__":
    main()
