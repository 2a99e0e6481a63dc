"""Tokenizing whole conversations (`task=dialogue memory=recall data.pair_builder.max_history_turns=null`): each
context's ids joined from its turns' ids, each distinct turn tokenized once (`joined`), against every context
tokenized whole as one text (`whole`, what a tokenizer that does not split at the markers gets). Both sides build
the same pairs from the same conversations, in a fresh process with an empty cache, and must give the same ids.

    python -m experiments.benchmarks.dialogue_tokenization [--rounds 5] [--train-fraction 0.1]
    python -m experiments.benchmarks.dialogue_tokenization --system joined   # one side, one process
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time

from experiments.benchmarks.workload import alternate, compose_config, ratio_summary
from weaver.data.dialogue import DialoguePairs
from weaver.instantiate import build, build_tokenizer

SYSTEMS = ["whole", "joined"]
WHOLE_CONVERSATIONS = ["task=dialogue", "memory=recall", "data.pair_builder.max_history_turns=null"]


def measure(system: str, train_fraction: float, max_source_length: int) -> dict:
    """Seconds to tokenize every split (the pairs built first, untimed), and a digest of the ids."""
    if system == "whole":
        DialoguePairs.splits_at_markers = lambda *_: False  # type: ignore[method-assign]
    cache = tempfile.mkdtemp(prefix="weaver-tokenization-")
    try:
        overrides = [f"data.train_fraction={train_fraction}", f"data.max_source_length={max_source_length}"]
        cfg = compose_config([*WHOLE_CONVERSATIONS, *overrides, f"paths.cache_dir={cache}"])
        data = build(cfg.data, "data", tokenizer=build_tokenizer(cfg), cache_dir=cfg.paths.cache_dir)
        _ = data.tokenizer  # pairs built, tokenizer loaded
        start = time.perf_counter()
        splits = data.tokenized_splits()
        seconds = time.perf_counter() - start
        digest = hashlib.sha256()
        for name in sorted(splits):
            for ids in splits[name]["input_ids"]:
                digest.update(json.dumps(ids).encode())
        sources = sum(len(split) for split in splits.values())
        return {"system": system, "seconds": round(seconds, 2), "sources": sources, "ids": digest.hexdigest()[:16]}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=SYSTEMS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--max-source-length", type=int, default=4096)
    options = parser.parse_args()
    if options.system:
        print(json.dumps(measure(options.system, options.train_fraction, options.max_source_length)))
        return
    arguments = [f"--train-fraction={options.train_fraction}", f"--max-source-length={options.max_source_length}"]
    results = alternate("experiments.benchmarks.dialogue_tokenization", SYSTEMS, options.rounds, arguments)
    if len({result["ids"] for side in results.values() for result in side}) != 1:
        raise SystemExit("The two sides tokenized differently: " + json.dumps(results))
    ratios = [w["seconds"] / j["seconds"] for w, j in zip(results["whole"], results["joined"], strict=True)]
    print(json.dumps({"results": results, "speed-up (whole / joined)": ratio_summary(ratios)}, indent=2))


if __name__ == "__main__":
    main()
