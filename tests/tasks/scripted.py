"""A scripted stand-in for model and tokenizer, to check what a task logs against reference metric code."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from weaver.data.collate import Seq2SeqCollator
from weaver.tasks import Seq2SeqTask

VOCAB = 8
FIRST_SCRIPT_TOKEN = 10


class ScriptedModel(torch.nn.Module):
    """Uniform logits for the loss; it "generates" its first source token, which names a scripted output."""

    decoder_start_token_id = 1

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(VOCAB))

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        return self.bias.expand(*decoder_input_ids.shape, VOCAB)

    def generate(self, input_ids, attention_mask, generation_config):
        return input_ids[:, :1]


class ScriptedTokenizer:
    """Token FIRST_SCRIPT_TOKEN + i decodes to the i-th scripted hypothesis."""

    pad_token_id = 0

    def __init__(self, hypotheses: list[str]) -> None:
        self.hypotheses = hypotheses

    def batch_decode(self, tokens, skip_special_tokens=True):
        return [self.hypotheses[int(row[0]) - FIRST_SCRIPT_TOKEN] for row in tokens]


def run_scripted_test(
    task_class: type[Seq2SeqTask],
    hypotheses: list[str],
    references: list[str],
    batch_size: int,
    sources: list[str] | None = None,
    predictions_file: Path | None = None,
) -> tuple[Seq2SeqTask, dict[str, float]]:
    """`trainer.test` of `task_class` over (source, reference) pairs whose generations are `hypotheses`."""
    sources = sources or [f"source {i}" for i in range(len(references))]
    examples: list[dict[str, Any]] = [
        {"example_id": i, "input_ids": [FIRST_SCRIPT_TOKEN + i, 2], "labels": [6, 2], "source": s, "target": r}
        for i, (s, r) in enumerate(zip(sources, references, strict=True))
    ]
    loader = DataLoader(examples, batch_size=batch_size, collate_fn=Seq2SeqCollator(pad_token_id=0))
    task = task_class(
        ScriptedModel(),
        ScriptedTokenizer(hypotheses),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        predictions_file=str(predictions_file) if predictions_file else None,
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(task, dataloaders=loader, verbose=False)
    return task, metrics
