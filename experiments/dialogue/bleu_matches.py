"""Where a dialogue run's BLEU comes from: the n-grams of its replies that BLEU counts as matches, beside those of
repeating the last context turn, on the same references.

    python experiments/dialogue/bleu_matches.py outputs/<date>/<time>/test_predictions.jsonl
    python experiments/dialogue/bleu_matches.py experiments/dialogue/recipe_chitchat_long/test_predictions.jsonl.gz

The last turn is taken from the predictions' `source`, as the run kept it (cut to its `max_source_length`).
First each system's corpus BLEU, with a third system that writes the model's reply and then the whole last turn,
and a fourth that writes the model's reply in the reference's surface style (an oracle: lowercased where the
reference is all lowercase, its final full stop or exclamation mark dropped where the reference ends without one);
then, for each n-gram order: how many n-grams each system wrote, how many BLEU matched (clipped per reply, as sacreBLEU
counts them, on its 13a tokens), how many of the matches were copied from the last turn, and the most frequent
matched n-grams; then the share of all n-grams that also occur in the last turn, for the model and for the
people's own replies (the references). Corpus BLEU is the geometric mean of the four match rates times the
brevity penalty, so the rare 3- and 4-gram matches weigh as much as the unigrams.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections import Counter
from pathlib import Path

from sacrebleu.metrics import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

MAX_ORDER = 4
# Markers a dialogue source carries: speaker tokens at the start of each turn, the topic's, the separator.
MARKER = re.compile(r"^<[^<>\s]+>")


def last_turn(source: str, separator: str) -> str:
    return MARKER.sub("", source.split(separator)[-1] if separator else source).strip()


def in_reference_style(reply: str, reference: str) -> str:
    """The reply with the reference's case and final punctuation: what surface style alone is worth to BLEU."""
    if not reference.rstrip().endswith((".", "!", "?")):
        reply = reply.rstrip().rstrip(".!")
    return reply.lower() if reference == reference.lower() else reply


def read_predictions(path: Path) -> list[dict[str, str]]:
    """The rows of a run's test_predictions.jsonl, plain or gzipped: {id, source, reference, hypothesis}."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def ngrams(text: str, tokenize: Tokenizer13a, order: int) -> Counter:
    counts, _ = extract_all_word_ngrams(tokenize(text), order, order)
    return counts


def matches(hypotheses: list[str], references: list[str], copied_from: list[str], order: int) -> dict[str, object]:
    tokenize = Tokenizer13a()
    written, matched, copied = 0, Counter(), 0
    for hypothesis, reference, turn in zip(hypotheses, references, copied_from, strict=True):
        grams = ngrams(hypothesis, tokenize, order)
        hits = grams & ngrams(reference, tokenize, order)
        written += sum(grams.values())
        matched.update(hits)
        copied += sum((hits & ngrams(turn, tokenize, order)).values())
    total = sum(matched.values())
    return {"written": written, "matched": total, "copied": copied, "top": matched.most_common(8)}


def copy_share(texts: list[str], turns: list[str], order: int) -> float:
    """Percentage of the n-grams of `texts` that also occur in the turn each answers (clipped per text)."""
    tokenize = Tokenizer13a()
    written = shared = 0
    for text, turn in zip(texts, turns, strict=True):
        grams = ngrams(text, tokenize, order)
        written += sum(grams.values())
        shared += sum((grams & ngrams(turn, tokenize, order)).values())
    return 100 * shared / max(written, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, help="a run's test_predictions.jsonl (or .jsonl.gz)")
    parser.add_argument("--separator", default="<sep>", help="the turn separator of the run's data config")
    args = parser.parse_args()
    rows = read_predictions(args.predictions)
    references = [row["reference"] for row in rows]
    turns = [last_turn(row["source"], args.separator) for row in rows]
    replies = [row["hypothesis"] for row in rows]
    # The third system writes both: all of the last turn's n-grams beside the model's, at about twice the length.
    # The fourth bounds what matching people's case and final punctuation could add.
    systems = {
        "model": replies,
        "last turn": turns,
        "model, then last turn": [f"{r} {t}" for r, t in zip(replies, turns, strict=True)],
        "model, in the reference's style": list(map(in_reference_style, replies, references)),
    }
    print(f"{len(rows)} replies from {args.predictions}")
    for name, hypotheses in systems.items():
        print(f"{name}: {BLEU().corpus_score(hypotheses, [references])}")
    print("| n | system | n-grams written | matched | match rate | matched and in the last turn |")
    print("| --- | --- | --- | --- | --- | --- |")
    tops = []
    for order in range(1, MAX_ORDER + 1):
        for name, hypotheses in systems.items():
            found = matches(hypotheses, references, turns, order)
            rate = 100 * found["matched"] / max(found["written"], 1)
            counts = f"{found['written']:,} | {found['matched']:,} | {rate:.2f}% | {found['copied']:,}"
            print(f"| {order} | {name} | {counts} |")
            if order >= 3:
                tops.append((order, name, found["top"]))
    for order, name, top in tops:
        print(f"{order}-grams matched most often, {name}: " + "; ".join(f"{' '.join(g)} ({c})" for g, c in top))
    for order in range(1, MAX_ORDER + 1):
        model, people = (copy_share(texts, turns, order) for texts in (systems["model"], references))
        print(f"{order}-grams also in the last turn: model {model:.2f}%, references {people:.2f}%")


if __name__ == "__main__":
    main()
