"""Exact top-k recall against faiss indexes: would `memory.index=faiss` make decoding over a long memory faster?

Recall in weaver_small scores, at every decoding step, each (layer, head)'s queries against that head's keys of the
whole memory and keeps the `top_k` best: one matrix product and one `topk` per (layer, head). An index answers the
same question approximately, after being built once per source and (layer, head). This script times both on random
keys of the model's shape (3 layers x 4 heads, 64 dimensions per head, 4 beams, `top_k` 16):

- `exact`: `torch.topk(q @ k.T)` per (layer, head), as `weaver.models.recall` does;
- `hnsw`: faiss `IndexHNSWFlat` (inner product, M 32, efSearch 64), built per (layer, head);
- `ivf`: faiss `IndexIVFFlat` (inner product, sqrt(n) lists, nprobe 8), trained and filled per (layer, head).

Each (system, memory size) runs in a fresh process, the systems alternating within each round. A process reports
the build time per source, the search time per decoding step (the median of 50 steps after 5 warm-ups) and, for the
indexes, recall@k: the share of the exact top-k entries it returns. The break-even is how many generated tokens
repay a build: build / (exact step - index step).

    pip install faiss-cpu
    python -m experiments.long_inputs.recall_index --rounds 5 --sizes 16384 65536 262144
    python -m experiments.long_inputs.recall_index --report
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

LAYERS, HEADS, HEAD_DIM, BEAMS, TOP_K, STEPS, WARMUP = 3, 4, 64, 4, 16, 50, 5
SYSTEMS = ("exact", "hnsw", "ivf")
RESULTS = Path(__file__).parent / "recall_index" / "rounds.jsonl"


def keys_and_queries(size: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Keys for each (layer, head), and queries for each step, shaped like the model's (float32, unit scale)."""
    rng = np.random.default_rng(0)
    keys = [rng.standard_normal((size, HEAD_DIM), dtype=np.float32) for _ in range(LAYERS * HEADS)]
    queries = rng.standard_normal((WARMUP + STEPS, LAYERS * HEADS, BEAMS, HEAD_DIM), dtype=np.float32)
    return keys, queries


def build_index(system: str, keys: np.ndarray):  # noqa: ANN201 (faiss is imported only here)
    import faiss

    if system == "hnsw":
        index = faiss.IndexHNSWFlat(HEAD_DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
    else:
        lists = int(np.sqrt(len(keys)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(HEAD_DIM), HEAD_DIM, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(keys)
        index.nprobe = 8
    index.add(keys)
    return index


def measure(system: str, size: int) -> dict[str, float]:
    keys, queries = keys_and_queries(size)
    tensors = [torch.from_numpy(k) for k in keys]
    exact = [
        [
            torch.topk(torch.from_numpy(q) @ k.T, TOP_K, dim=-1).indices.numpy()
            for q, k in zip(step, tensors, strict=True)
        ]
        for step in queries[WARMUP : WARMUP + 5]
    ]
    start = time.perf_counter()
    indexes = [build_index(system, k) for k in keys] if system != "exact" else None
    build = time.perf_counter() - start

    def step(queries_of_step: np.ndarray) -> list[np.ndarray]:
        if indexes is None:
            return [
                torch.topk(torch.from_numpy(q) @ k.T, TOP_K, dim=-1).indices.numpy()
                for q, k in zip(queries_of_step, tensors, strict=True)
            ]
        return [index.search(q, TOP_K)[1] for q, index in zip(queries_of_step, indexes, strict=True)]

    times = []
    for number, queries_of_step in enumerate(queries):
        start = time.perf_counter()
        step(queries_of_step)
        if number >= WARMUP:
            times.append(time.perf_counter() - start)
    found = [
        len(set(a.tolist()) & set(b.tolist())) / TOP_K
        for step_queries, step_exact in zip(queries[WARMUP : WARMUP + 5], exact, strict=True)
        for got, want in zip(step(step_queries), step_exact, strict=True)
        for a, b in zip(got, want, strict=True)
    ]
    return {"build_s": build, "step_ms": 1000 * statistics.median(times), "recall_at_k": statistics.mean(found)}


def run_rounds(rounds: int, sizes: list[int], systems: list[str]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for round_number in range(rounds):
        order = systems if round_number % 2 == 0 else systems[::-1]
        for size in sizes:
            for system in order:
                command = [sys.executable, "-m", __spec__.name, "--measure", system, "--size", str(size)]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                row = {"round": round_number, "system": system, "size": size, **json.loads(output.splitlines()[-1])}
                print(json.dumps(row), flush=True)
                with RESULTS.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report() -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    print("| memory entries | system | build per source | search per step | recall@16 | break-even tokens |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in sorted({row["size"] for row in rows}):
        exact_by_round = {r["round"]: r["step_ms"] for r in rows if r["size"] == size and r["system"] == "exact"}
        for system in SYSTEMS:
            mine = [r for r in rows if r["size"] == size and r["system"] == system]
            if not mine:
                continue

            even = "-"
            if system != "exact":
                saved = [exact_by_round[r["round"]] - r["step_ms"] for r in mine if r["round"] in exact_by_round]
                build_ms = statistics.median(r["build_s"] * 1000 for r in mine)
                even = f"{build_ms / statistics.median(saved):,.0f}" if statistics.median(saved) > 0 else "never"
            build = "-" if system == "exact" else f"{spread([r['build_s'] for r in mine])} s"
            recall = "1.00" if system == "exact" else spread([r["recall_at_k"] for r in mine])
            print(f"| {size:,} | {system} | {build} | {spread([r['step_ms'] for r in mine])} ms | {recall} | {even} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536, 262144])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--measure", choices=SYSTEMS, help="measure one system in this process")
    parser.add_argument("--size", type=int)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        report()
    elif args.measure:
        print(json.dumps(measure(args.measure, args.size)))
    else:
        run_rounds(args.rounds, args.sizes, args.systems)


if __name__ == "__main__":
    main()
