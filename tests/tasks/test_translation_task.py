"""The translation task's logged metrics are sacreBLEU's, over the whole corpus, whatever the batching."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import sacrebleu
import torch
from torch.utils.data import DataLoader

from weaver.data.collate import Seq2SeqCollator
from weaver.tasks import TranslationTask
from weaver.tasks.seq2seq import shift_right

REFERENCES = [
    "Dieses Paket enthält die Dokumentation.",
    "Werkzeuge für SSH, SCP und SFTP",
    "Übersetzungen für „Grüße“ — 日本語",
    "Bibliothek zum Lesen von Bildern",
    "",
]
HYPOTHESES = [
    "Dieses Paket enthält Dokumentation.",
    "Werkzeuge für SSH und SFTP",
    "Übersetzungen für Grüße",
    "",
    "leer",
]


class ScriptedModel(torch.nn.Module):
    """Stands in for a model: uniform logits for the loss; it "generates" its first source token."""

    decoder_start_token_id = 1

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(8))

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        return self.bias.expand(*decoder_input_ids.shape, 8)

    def generate(self, input_ids, attention_mask, generation_config):
        return input_ids[:, :1]


class ScriptedTokenizer:
    """Token 10 + i decodes to the i-th scripted hypothesis."""

    pad_token_id = 0

    def batch_decode(self, tokens, skip_special_tokens=True):
        return [HYPOTHESES[int(row[0]) - 10] for row in tokens]


def loader(batch_size: int) -> DataLoader:
    examples = [
        {
            "example_id": i,
            "input_ids": [10 + i, 2],
            "labels": [6, 2],
            "source": f"src {i}",
            "target": reference,
        }
        for i, reference in enumerate(REFERENCES)
    ]
    return DataLoader(examples, batch_size=batch_size, collate_fn=Seq2SeqCollator(pad_token_id=0))


def run_test(batch_size: int) -> tuple[TranslationTask, dict[str, float]]:
    task = TranslationTask(ScriptedModel(), ScriptedTokenizer(), optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(task, dataloaders=loader(batch_size), verbose=False)
    return task, metrics


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_logged_bleu_and_chrf_equal_sacrebleu_on_the_corpus(batch_size: int) -> None:
    task, metrics = run_test(batch_size)
    assert metrics["test/bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score, abs=1e-6)
    assert metrics["test/chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score, abs=1e-6)
    assert task.metric_signatures["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")


def test_loss_is_the_exact_token_mean_over_the_split() -> None:
    _, metrics = run_test(batch_size=2)
    assert metrics["test/loss"] == pytest.approx(math.log(8.0), rel=1e-5)  # uniform logits over 8 tokens


def test_shift_right_starts_with_the_start_token_and_hides_label_padding() -> None:
    labels = torch.tensor([[7, 8, 2], [9, 2, -100]])
    assert shift_right(labels, start_token_id=1, pad_token_id=0).tolist() == [[1, 7, 8], [1, 9, 2]]
