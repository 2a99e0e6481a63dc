"""Translation: the shared task plus sacreBLEU and chrF."""

from __future__ import annotations

from weaver.metrics.translation import sentence_bleu, translation_scores
from weaver.tasks.seq2seq import Seq2SeqTask


class TranslationTask(Seq2SeqTask):
    metric_names = ("bleu", "chrf")

    def score(self, hypotheses: list[str], references: list[str], sources: list[str]) -> dict[str, float]:
        scores, self.metric_signatures = translation_scores(hypotheses, references)
        return scores

    def example_score(self, hypothesis: str, reference: str, source: str) -> float | None:
        return sentence_bleu(hypothesis, reference)
