"""The pretraining corpus's manifest: its `stats.json` (sources, licences, exclusions, words) plus token counts per
source and language under the pretrained model's tokenizer, written to `experiments/pretraining/manifest.json`.

    python -m experiments.pretraining.manifest [--corpus data/pretraining] [--tokenizer <model folder>]
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path

from transformers import AutoTokenizer

from weaver.config import pretrained_path

HERE = Path(__file__).parent


def token_counts(train_file: Path, tokenizer_folder: str, batch_size: int = 2048) -> dict[str, int]:
    """Tokens (no special tokens) of the train split's texts, by `source/lang`."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    counts: Counter[str] = Counter()
    with gzip.open(train_file, "rt", encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        encoded = tokenizer([row["text"] for row in batch], add_special_tokens=False)["input_ids"]
        for row, ids in zip(batch, encoded, strict=True):
            counts[f"{row['source']}/{row['lang']}"] += len(ids)
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/pretraining"))
    parser.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: the shipped model's)")
    parser.add_argument("--output", type=Path, default=HERE / "manifest.json")
    args = parser.parse_args()
    stats = json.loads((args.corpus / "stats.json").read_text(encoding="utf-8"))
    stats["train_tokens"] = token_counts(
        args.corpus / "train.jsonl.gz", args.tokenizer or pretrained_path("weaver_small_pretrained")
    )
    stats["train_tokens_total"] = sum(stats["train_tokens"].values())
    stats["train_words_total"] = sum(stats["train_words"].values())
    args.output.write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.output}: {stats['train_words_total']:,} words, {stats['train_tokens_total']:,} tokens")


if __name__ == "__main__":
    main()
