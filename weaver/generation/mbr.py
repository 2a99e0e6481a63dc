"""Minimum Bayes risk decoding (Kumar & Byrne, 2004; Freitag et al., 2022): of several sampled outputs for one
source, return the one that agrees most with the others under a metric, an estimate of the output with the highest
expected score against the unknown reference. It favours what the samples share over any one sample's accidents."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from sacrebleu.metrics import BLEU, CHRF

# Sentence-level utilities from sacreBLEU: BLEU with effective order (short outputs do not score zero), chrF.
UTILITIES: dict[str, Callable[[], BLEU | CHRF]] = {"bleu": lambda: BLEU(effective_order=True), "chrf": CHRF}


def mbr_select(candidates: list[str], scorer: BLEU | CHRF) -> str:
    """The candidate with the highest total utility against every other sample. Equal samples are scored once and
    weighted by their count (a sample is never its own pseudo-reference); ties go to the earliest candidate."""
    counts = Counter(candidates)
    if len(counts) == 1:
        return candidates[0]
    unique = list(counts)

    def utility(hypothesis: str, reference: str) -> float:
        # Agreement is full for equal texts, the empty one too, which sacreBLEU scores 0 against itself.
        return 100.0 if hypothesis == reference else scorer.sentence_score(hypothesis, [reference]).score

    def expected_utility(hypothesis: str) -> float:
        return sum(
            (counts[reference] - (reference == hypothesis)) * utility(hypothesis, reference) for reference in unique
        )

    return max(unique, key=expected_utility)  # max keeps the first of equal scores; `unique` is in sample order
