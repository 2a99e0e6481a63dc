"""Decoding a trained checkpoint's test batches: this tree's search, where each source leaves the batch once its
search is done, against an earlier revision's (`--baseline`), which kept decoding every source of a batch until the
last one was done.

Both sides decode the very same batches (the first `--batches` of the test split, as `eval.py` forms them) with the
checkpoint's own generation settings and precision, and must produce the very same outputs (compared by digest).
Each measurement is a fresh process, the baseline's run from a `git worktree` of that revision; the two alternate
over the rounds, and the report gives each round's speed-up (baseline seconds / this tree's), their median and range.

    python -m experiments.benchmarks.finished_sources --ckpt_path outputs/.../checkpoints/last.ckpt [--batches 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ["this_tree", "baseline"]


def measure(ckpt_path: str, batches: int) -> dict:
    """Seconds to decode the first `batches` test batches, with the `weaver` package first on the path."""
    import torch

    from weaver.checkpoints import restore_run
    from weaver.data import GivenTokenizer
    from weaver.instantiate import build
    from weaver.utils.hardware import compute_dtype

    torch.set_num_threads(os.cpu_count() or 1)
    run = restore_run(ckpt_path)
    data = build(run.cfg.data, "data", tokenizer=GivenTokenizer(run.tokenizer), splits=["test"])
    data.setup("test")
    model, generation, dtype = run.task.model, run.task.generation, compute_dtype(run.cfg.trainer.precision)
    digest, sources, tokens, seconds = hashlib.sha256(), 0, 0, 0.0
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        for index, batch in enumerate(data.test_dataloader()):
            if index == batches:
                break
            start = time.perf_counter()
            output = model.generate(batch["input_ids"], batch["attention_mask"], generation)
            seconds += time.perf_counter() - start
            for row in output.tolist():
                digest.update(json.dumps([t for t in row if t != run.tokenizer.pad_token_id]).encode())
            sources += output.size(0)
            tokens += int(output.ne(run.tokenizer.pad_token_id).sum())
    return {
        "seconds": round(seconds, 2),
        "sources": sources,
        "generated_tokens": tokens,
        "outputs_sha256": digest.hexdigest()[:16],
        "weaver": str(Path(sys.modules["weaver"].__file__).parent),
    }


def worktree(revision: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="weaver-baseline-")) / "tree"
    command = ["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach", str(folder), revision]
    subprocess.run(command, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", default="ff305d3", help="the revision to compare against")
    parser.add_argument("--measure", action="store_true", help="(internal) one measurement in this process")
    options = parser.parse_args()
    if options.measure:
        print(json.dumps(measure(options.ckpt_path, options.batches)))
        return
    from experiments.benchmarks.workload import ratio_summary, round_order

    trees = {"this_tree": ROOT, "baseline": worktree(options.baseline)}
    results: dict[str, list[dict]] = {system: [] for system in SYSTEMS}
    try:
        for round_index in range(options.rounds):
            for system in round_order(SYSTEMS, round_index):
                # -P: the `weaver` package is the one of PYTHONPATH's tree, not of this script's folder or cwd.
                command = [sys.executable, "-P", __file__, "--measure", "--ckpt_path", options.ckpt_path]
                command += ["--batches", str(options.batches)]
                environment = {**os.environ, "PYTHONPATH": str(trees[system])}
                finished = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
                results[system].append(json.loads(finished.stdout.strip().splitlines()[-1]))
                print(f"round {round_index + 1} {system}: {results[system][-1]}", file=sys.stderr, flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["baseline"])], check=False)
    digests = {result["outputs_sha256"] for system in SYSTEMS for result in results[system]}
    if len(digests) != 1:
        raise SystemExit(f"the two searches' outputs differ: {digests}")
    speedups = [b["seconds"] / t["seconds"] for b, t in zip(results["baseline"], results["this_tree"], strict=True)]
    report = {"baseline": options.baseline, "batches": options.batches, **results, "speedup": ratio_summary(speedups)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
