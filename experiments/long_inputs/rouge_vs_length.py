"""ROUGE-L on the recall set against the source's length: the plot of the runs recorded in this folder.

Each run folder holds `metrics_<n>_documents.json` (the test split scored at n documents a source, the first 100
queries or fewer: as many as its `test_predictions_<n>_documents.jsonl.gz` has rows) and, where measured,
`metrics_<n>_truncated_documents.json` (the same sources cut to the model's window). A source's length is counted in
the shipped model's tokens, on the same test queries rebuilt by the recall set's pair builder (the counts are cached
in `rouge_vs_length/source_tokens.json`); the oracle is n = 1, the dashed line 90% of the first run's oracle.

    python -m experiments.long_inputs.rouge_vs_length       # rouge_vs_length/rouge_vs_length.png
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.benchmarks.workload import compose_config  # noqa: E402
from weaver.instantiate import build, build_tokenizer  # noqa: E402

HERE = Path(__file__).parent
OUTPUT = HERE / "rouge_vs_length"
RUNS = {
    "recall_set_document_windows": "memory + recall, windows within documents, query marks, every head (the recipe)",
    "recall_set_query_match_head_0_both_cores": "memory + recall, query marks, a finder head (recipe 9)",
    "recall_set_2to8_recall": "memory + recall, recall in training (recipe 4)",
    "recall_set_2to8_full": "memory + recall, full attention in training",
    "recall_set_recall_at_evaluation": "no memory in training, recall at evaluation",
}
METRICS = re.compile(r"metrics_(\d+)_(truncated_)?documents\.json")


def scores(run: Path) -> dict[tuple[int, bool], float]:
    """{(documents, truncated): test ROUGE-L} of a run folder."""
    found = {}
    for path in run.glob("metrics_*_documents.json"):
        documents, truncated = METRICS.fullmatch(path.name).groups()
        found[int(documents), bool(truncated)] = json.loads(path.read_text())["metrics"]["test/rougeL"]
    return found


def queries(run: Path, documents: int) -> int:
    with gzip.open(run / f"test_predictions_{documents}_documents.jsonl.gz", "rt", encoding="utf-8") as file:
        return sum(1 for _ in file)


def source_tokens(documents: int, examples: int) -> float:
    """Mean length in tokens of the recall set's first ``examples`` test sources of ``documents`` documents."""
    cfg = compose_config(
        [
            "experiment=recall_set_long",
            f"++data.pair_builder.eval_num_documents={documents}",
            f"++data.pair_builder.eval_max_examples={examples}",
        ]
    )
    data = build(
        cfg.data, "data", tokenizer=build_tokenizer(cfg), cache_dir=cfg.paths.cache_dir
    )  # no setup: untokenized
    sources = list(data.pairs()["test"]["source"])
    return statistics.mean(len(ids) for ids in data.tokenizer(sources)["input_ids"])


def cached_source_tokens(needed: set[tuple[int, int]]) -> dict[tuple[int, int], float]:
    cache = OUTPUT / "source_tokens.json"
    stored = json.loads(cache.read_text()) if cache.exists() else {}
    known = {tuple(map(int, key.split("x"))): value for key, value in stored.items()}
    for documents, examples in sorted(needed - known.keys()):
        known[documents, examples] = source_tokens(documents, examples)
    OUTPUT.mkdir(exist_ok=True)
    cache.write_text(json.dumps({f"{d}x{e}": v for (d, e), v in sorted(known.items())}, indent=1) + "\n")
    return known


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), help="run folders under experiments/long_inputs")
    args = parser.parse_args()
    runs = {name: scores(HERE / name) for name in args.runs}
    scored = {(name, n): queries(HERE / name, n) for name, found in runs.items() for n in {n for n, _ in found}}
    lengths = cached_source_tokens({(n, count) for (_, n), count in scored.items()})
    figure, axis = plt.subplots(figsize=(8, 7.5))
    for index, (name, found) in enumerate(runs.items()):
        for truncated, style in ((False, "-"), (True, "none")):
            points = sorted(
                (lengths[documents, scored[name, documents]], score)
                for (documents, cut), score in found.items()
                if cut == truncated
            )
            if points:
                label = RUNS.get(name, name) + (", truncated to its window" if truncated else "")
                fill = "none" if truncated else f"C{index}"
                axis.plot(
                    *zip(*points, strict=True),
                    linestyle=style,
                    marker="osd^v"[index % 5],
                    color=f"C{index}",
                    markerfacecolor=fill,
                    label=label,
                )
    first = next(iter(runs.values()))
    axis.axhline(0.9 * first[1, False], color="grey", linestyle="--", linewidth=1, label="90% of the recipe's oracle")
    axis.set_xscale("log")
    axis.set_xlabel("source tokens (mean over the test queries scored)")
    axis.set_ylabel("test ROUGE-L")
    axis.set_title("The recall set: ROUGE-L against the source's length (1 document: the oracle)")
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1)  # below: no line hidden
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(OUTPUT / "rouge_vs_length.png", dpi=120)
    print(f"wrote {OUTPUT / 'rouge_vs_length.png'}")


if __name__ == "__main__":
    main()
