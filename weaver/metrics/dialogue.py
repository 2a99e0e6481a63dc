"""Dialogue metrics, scored once over the whole corpus of generated responses.

- `f1`: unigram F1 between hypothesis and reference as in ParlAI / ConvAI2 (both normalised: lowercased,
  punctuation and the articles a/an/the removed; precision and recall over the multiset of shared words; 0 when
  nothing is shared), averaged over examples, times 100.
- `bleu`: sacreBLEU corpus BLEU (default signature, as for translation).
- `distinct_1`, `distinct_2`: distinct unigrams / bigrams over all generated responses together (Li et al., 2016):
  unique n-grams / total n-grams of the lowercased, whitespace-split responses; n-grams never cross responses.
- `length`: mean response length in whitespace-separated words.

Perplexity is the base task's `val/ppl` (from the exact token-level loss).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from sacrebleu.metrics import BLEU

# ParlAI's `normalize_answer`: punctuation and articles become spaces, then whitespace is collapsed.
PUNCTUATION = re.compile(r"[!\"#$%&()*+,\-./:;<=>?@\[\]\\^`{|}~_']")
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = PUNCTUATION.sub(" ", text.lower())
    return " ".join(ARTICLES.sub(" ", text).split())


def unigram_f1(hypothesis: str, reference: str) -> float:
    """ParlAI's `F1Metric` for one example, in [0, 1]."""
    predicted, gold = normalize(hypothesis).split(), normalize(reference).split()
    shared = sum((Counter(predicted) & Counter(gold)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(gold)
    return 2 * precision * recall / (precision + recall)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / total n-grams over all `texts` (0 when there are none)."""
    ngrams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        words = text.lower().split()
        ngrams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = sum(ngrams.values())
    return len(ngrams) / total if total else 0.0


def dialogue_scores(hypotheses: list[str], references: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Scores (F1 first: it is the monitored one) and the sacreBLEU signature."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    count = max(len(hypotheses), 1)
    bleu = BLEU()
    scores = {
        "f1": 100 * sum(unigram_f1(h, r) for h, r in zip(hypotheses, references, strict=True)) / count,
        "bleu": bleu.corpus_score(hypotheses, [references]).score,
        "distinct_1": distinct_n(hypotheses, 1),
        "distinct_2": distinct_n(hypotheses, 2),
        "length": sum(len(h.split()) for h in hypotheses) / count,
    }
    return scores, {"bleu": str(bleu.get_signature())}
