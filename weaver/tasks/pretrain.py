"""Self-supervised pretraining (`task=pretrain`): the shared task, scored by its loss on held-out text alone.

The examples are raw texts (`data=pretrain_text`) corrupted by `data.denoising`, to reconstruct: the validation and
test losses and perplexities are the objective's own, computed exactly over the whole split as for every task. No
output is generated, so an evaluation costs one forward pass per batch.
"""

from __future__ import annotations

from typing import Any

from weaver.tasks.seq2seq import Seq2SeqTask


class PretrainTask(Seq2SeqTask):
    def evaluation_step(self, stage: str, batch: dict[str, Any]) -> None:
        self.update_loss(stage, batch)

    def score(self, hypotheses: list[str], references: list[str], sources: list[str]) -> dict[str, float]:
        return {}
