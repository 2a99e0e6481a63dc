"""Encoding sources of many short documents in windows: this checkout's `encode_in_windows` against an earlier
revision's, in fresh processes that alternate over several rounds (each round: a ratio of mean seconds per encoding).

The sources are the recall set's shape: a query as every window's prefix, then 40 documents of 60 to 200 tokens, each
starting with a segment token, so most windows are shorter than `memory.window`; weaver_small's shape, fp32.

    python -m experiments.long_inputs.segment_windows --before f44918c --rounds 5
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PREFIX_END, SEGMENT_START = 5, 6


def sources(count: int = 2, documents: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids and mask of `count` sources: a query, then `documents` documents of 60 to 200 tokens."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        ids = [10, 11, PREFIX_END]
        for _ in range(documents):
            length = int(torch.randint(60, 200, (1,), generator=generator))
            ids += [SEGMENT_START, *torch.randint(20, 1000, (length,), generator=generator).tolist()]
        rows.append(ids)
    longest = max(map(len, rows))
    ids, mask = torch.zeros(count, longest, dtype=torch.long), torch.zeros(count, longest, dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)], mask[index, : len(row)] = torch.tensor(row), 1
    return ids, mask


def seconds_per_encoding(memory_module: Path, repeats: int) -> float:
    """Mean seconds of `encode_in_windows` from `memory_module` on `sources()`, after one warm-up."""
    from weaver.models import build_weaver
    from weaver.models.memory import MemoryConfig

    spec = importlib.util.spec_from_file_location("memory_under_test", memory_module)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = build_weaver(1000, d_model=512, num_heads=8, num_encoder_layers=6, num_decoder_layers=6, ffn_dim=2048)
    config = MemoryConfig(window=256, stride=128, prefix_token_id=PREFIX_END, segment_token_id=SEGMENT_START)
    ids, mask = sources()
    with torch.no_grad():
        module.encode_in_windows(model.eval()._encode_window, ids, mask, config, max_positions=1024)
        start = time.perf_counter()
        for _ in range(repeats):
            module.encode_in_windows(model._encode_window, ids, mask, config, max_positions=1024)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the git revision whose weaver/models/memory.py is compared")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # a child process: time this module
    args = parser.parse_args()
    if args.measure:
        print(seconds_per_encoding(args.measure, args.repeats))
        return
    with tempfile.TemporaryDirectory() as folder:
        before = Path(folder) / "memory_before.py"
        before.write_bytes(
            subprocess.check_output(["git", "-C", str(ROOT), "show", f"{args.before}:weaver/models/memory.py"])
        )
        sides = {"before": before, "after": ROOT / "weaver" / "models" / "memory.py"}
        ratios = []
        for round_number in range(1, args.rounds + 1):
            seconds = {}
            for side, module in sides.items():
                command = [sys.executable, "-m", "experiments.long_inputs.segment_windows", "--before", args.before]
                output = subprocess.check_output(
                    [*command, "--repeats", str(args.repeats), "--measure", str(module)], cwd=ROOT
                )
                seconds[side] = float(output.decode().split()[-1])
            ratios.append(seconds["before"] / seconds["after"])
            before, after = seconds["before"], seconds["after"]
            print(f"round {round_number}: before {before:.2f} s, after {after:.2f} s, {ratios[-1]:.2f}x")
    print(f"speed-up: {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) over {args.rounds} rounds")


if __name__ == "__main__":
    main()
