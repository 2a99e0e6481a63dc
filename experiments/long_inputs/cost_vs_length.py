"""Cost against input length: weaver_small reading one long source with memory and recall, beside the same model
with full attention (one pass, positions as long as the source).

Each (system, length) runs in a fresh process, the systems alternating within each round, the lengths in turn; a
process measures, on random token ids in bf16 autocast as in training:
- generation: encoding the source, then greedy decoding of 32 tokens (time per generated token, encoding apart);
- training: forward and backward of one (source, 32-token target) pair, median of 3 steps after one warm-up;
- peak RSS after generation and after training (the process's high-water mark, so training's includes generation's).
A process that runs past `--timeout` seconds or is killed for memory is recorded as such: full attention's cost
grows with the square of the length.

    python -m experiments.long_inputs.cost_vs_length --rounds 5 --output experiments/long_inputs/cost_vs_length
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

SYSTEMS = ("memory", "memory_folded", "full")
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
        model = build_weaver(VOCAB, max_positions=512, memory=memory, **SMALL)
    source = torch.randint(3, VOCAB, (1, length))
    mask = torch.ones_like(source)
    target = torch.randint(3, VOCAB, (1, TARGET_LENGTH))
    figures: dict[str, float] = {}
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        start = time.perf_counter()
        states = model.encode(source, mask)
        figures["encode_s"] = time.perf_counter() - start
        del states
        start = time.perf_counter()
        tokens = model.generate(source, mask, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
        total = time.perf_counter() - start
    figures["decode_ms_per_token"] = 1000 * (total - figures["encode_s"]) / tokens.size(1)
    figures["generate_peak_rss_mb"] = peak_rss_mb()
    model.train()
    steps = []
    for _ in range(4):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(source, mask, target).float().logsumexp(-1).mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        steps.append(time.perf_counter() - start)
    figures["train_step_s"] = statistics.median(steps[1:])
    figures["train_peak_rss_mb"] = peak_rss_mb()
    return figures


def run_rounds(rounds: int, lengths: list[int], timeout: float, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    log = output / "rounds.jsonl"
    with log.open("a") as file:
        for round_index in range(rounds):
            for length in lengths:
                # Alternate which system goes first, so drift in the machine's speed is shared.
                order = SYSTEMS if round_index % 2 == 0 else tuple(reversed(SYSTEMS))
                for system in order:
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
                    print(json.dumps(record), flush=True)
                    file.write(json.dumps(record) + "\n")
                    file.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="measure one (system, length) in this process")
    parser.add_argument("--system", choices=SYSTEMS, default="memory")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--output", type=Path, default=Path("experiments/long_inputs/cost_vs_length"))
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.system, args.length)))
    else:
        run_rounds(args.rounds, args.lengths, args.timeout, args.output)


if __name__ == "__main__":
    main()
