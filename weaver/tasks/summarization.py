"""Summarization: the shared task plus ROUGE-1/2/L/Lsum as Google's rouge-score computes them."""

from __future__ import annotations

from weaver.metrics.summarization import summarization_scores
from weaver.tasks.seq2seq import Seq2SeqTask


class SummarizationTask(Seq2SeqTask):
    metric_names = ("rougeL", "rouge1", "rouge2", "rougeLsum", "gen_len")

    def score(self, hypotheses: list[str], references: list[str], sources: list[str]) -> dict[str, float]:
        scores, self.metric_signatures = summarization_scores(hypotheses, references)
        return scores
