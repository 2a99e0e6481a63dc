"""What reading a whole man page can add over its first `--positions` tokens, before any model is trained.

For each page of a `data=manpages` split, the part a truncated model reads (the text behind the first
`--positions` tokens of the shipped model's tokenizer, special tokens included, as the data module cuts it) against
the whole page:

- the share of the NAME line's words (ROUGE-1 recall) and word pairs (ROUGE-2 recall) found in each;
- an extractive oracle: the ROUGE-L of the page's single best-matching sentence, found among the first tokens'
  sentences and among all of them.

Pages where the whole page scores above its first tokens are where memory can hold something the summary needs; a
paired bootstrap (as `rouge_gap`) says whether the oracle's own gain from the whole page is beyond resampling noise.

    python -m experiments.long_inputs.manpages_ceiling --split test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rouge_score.rouge_scorer import RougeScorer
from transformers import PreTrainedTokenizerBase

from experiments.long_inputs.rouge_gap import paired_bootstrap
from weaver.config import pretrained_path, resource_path
from weaver.corpora.shipped import read_jsonl_gz
from weaver.data import PretrainedTokenizer
from weaver.metrics.summarization import rouge_scorer, split_sentences


def first_tokens(tokenizer: PreTrainedTokenizerBase, text: str, positions: int) -> str:
    """The text a model with `positions` source positions reads: the page cut where its last kept token ends."""
    offsets = tokenizer(text, truncation=True, max_length=positions, return_offsets_mapping=True)["offset_mapping"]
    return text[: max(end for _, end in offsets)]


def best_sentence_rouge_l(scorer: RougeScorer, summary: str, sentences: list[str]) -> float:
    return max((scorer.score(summary, sentence)["rougeL"].fmeasure for sentence in sentences), default=0.0)


def page_ceiling(
    tokenizer: PreTrainedTokenizerBase, scorer: RougeScorer, row: dict[str, str], positions: int
) -> dict[str, float]:
    document, summary = row["document"], row["summary"]
    head = first_tokens(tokenizer, document, positions)
    head_scores, whole_scores = scorer.score(summary, head), scorer.score(summary, document)
    return {
        "truncated": len(head) < len(document),
        "rouge1_recall_head": head_scores["rouge1"].recall,
        "rouge1_recall_whole": whole_scores["rouge1"].recall,
        "rouge2_recall_head": head_scores["rouge2"].recall,
        "rouge2_recall_whole": whole_scores["rouge2"].recall,
        "oracle_rougeL_head": best_sentence_rouge_l(scorer, summary, split_sentences(head)),
        "oracle_rougeL_whole": best_sentence_rouge_l(scorer, summary, split_sentences(document)),
    }


def summarise(pages: list[dict[str, float]]) -> dict[str, float]:
    columns = {key: np.array([page[key] for page in pages], dtype=float) for key in pages[0]}
    result: dict[str, float] = {"pages": len(pages), "truncated_pages": int(columns["truncated"].sum())}
    for measure in ("rouge1_recall", "rouge2_recall", "oracle_rougeL"):
        head, whole = columns[f"{measure}_head"], columns[f"{measure}_whole"]
        result[f"{measure}_head"] = round(100 * float(head.mean()), 2)
        result[f"{measure}_whole"] = round(100 * float(whole.mean()), 2)
        result[f"{measure}_pages_whole_higher"] = int((whole > head + 1e-9).sum())
    whole_over_head = paired_bootstrap(columns["oracle_rougeL_whole"], columns["oracle_rougeL_head"], 10000, 0)
    result["oracle_rougeL_whole_over_head_95"] = whole_over_head["ratio_95"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--positions", type=int, default=512)
    parser.add_argument("--tokenizer", default=pretrained_path("weaver_small_pretrained"))
    args = parser.parse_args()
    tokenizer = PretrainedTokenizer(args.tokenizer).load()
    scorer = rouge_scorer()
    rows = read_jsonl_gz(Path(resource_path("manpages")) / f"{args.split}.jsonl.gz")
    pages = [page_ceiling(tokenizer, scorer, row, args.positions) for row in rows]
    print(json.dumps({"split": args.split, "positions": args.positions, **summarise(pages)}, indent=2))


if __name__ == "__main__":
    main()
