"""Dialogue: the shared task scored with unigram F1, BLEU, distinct-1/2 and response length (perplexity is the base
task's `ppl`)."""

from __future__ import annotations

from weaver.metrics.dialogue import dialogue_scores
from weaver.tasks.seq2seq import Seq2SeqTask


class DialogueTask(Seq2SeqTask):
    metric_names = ("f1", "bleu", "distinct_1", "distinct_2", "length")

    def score(self, hypotheses: list[str], references: list[str], sources: list[str]) -> dict[str, float]:
        scores, self.metric_signatures = dialogue_scores(hypotheses, references)
        return scores
