"""How far one system's ROUGE-L is from another's on the same examples, and whether the gap is real.

Reads two prediction files (`test_predictions.jsonl` of `eval.py` or a training run's test, or gzipped), pairs
their rows by `id`, and reports each system's ROUGE-L (rouge-score, Porter stemming, as the task scores it), the
ratio of the first to the second, and a paired bootstrap (resampling the same examples for both) of that ratio and
of the difference: a 95% interval that excludes 1 (or 0) says the gap is not resampling noise.

    python -m experiments.long_inputs.rouge_gap <recall at 40 documents>.jsonl <oracle>.jsonl
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
from rouge_score.rouge_scorer import RougeScorer


def per_example_rouge_l(path: Path) -> dict[int, float]:
    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    text = gzip.decompress(path.read_bytes()).decode("utf-8") if path.suffix == ".gz" else path.read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {row["id"]: 100 * scorer.score(row["reference"], row["hypothesis"])["rougeL"].fmeasure for row in rows}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int, seed: int) -> dict[str, list[float]]:
    """95% intervals of mean(a) / mean(b) and mean(a) - mean(b) over resamplings of the example indices."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(a), size=(samples, len(a)))
    means_a, means_b = a[picks].mean(1), b[picks].mean(1)
    ratio = means_a / np.maximum(means_b, 1e-12)
    return {
        "ratio_95": np.percentile(ratio, [2.5, 97.5]).round(3).tolist(),
        "difference_95": np.percentile(means_a - means_b, [2.5, 97.5]).round(2).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    first, second = per_example_rouge_l(args.first), per_example_rouge_l(args.second)
    shared = sorted(first.keys() & second.keys())
    if not shared:
        raise SystemExit(f"{args.first} and {args.second} share no example id.")
    a = np.array([first[i] for i in shared])
    b = np.array([second[i] for i in shared])
    result = {
        "examples": len(shared),
        "first_rougeL": round(float(a.mean()), 2),
        "second_rougeL": round(float(b.mean()), 2),
        "ratio": round(float(a.mean() / max(b.mean(), 1e-12)), 3),
        **paired_bootstrap(a, b, args.samples, args.seed),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
