"""The translation task's logged metrics are sacreBLEU's, over the whole corpus, whatever the batching."""

from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

import pytest
import sacrebleu
import torch
import torch.nn.functional as F

from tests.tasks.scripted import VOCAB, ScriptedModel, ScriptedTokenizer, run_scripted_test
from weaver.data.collate import Seq2SeqCollator
from weaver.errors import ConfigError
from weaver.generation import GenerationConfig
from weaver.models import build_weaver
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


def run_test(batch_size: int) -> tuple[TranslationTask, dict[str, float]]:
    return run_scripted_test(TranslationTask, HYPOTHESES, REFERENCES, batch_size)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_logged_bleu_and_chrf_equal_sacrebleu_on_the_corpus(batch_size: int) -> None:
    task, metrics = run_test(batch_size)
    assert metrics["test/bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score, abs=1e-6)
    assert metrics["test/chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score, abs=1e-6)
    assert task.metric_signatures["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert sorted(metrics) == sorted(task.logged_metrics("test"))  # what monitor.metric is checked against


def test_loss_is_the_exact_token_mean_over_the_split() -> None:
    _, metrics = run_test(batch_size=2)
    assert metrics["test/loss"] == pytest.approx(math.log(8.0), rel=1e-5)  # uniform logits over 8 tokens


def test_shift_right_starts_with_the_start_token_and_hides_label_padding() -> None:
    labels = torch.tensor([[7, 8, 2], [9, 2, -100]])
    assert shift_right(labels, start_token_id=1, pad_token_id=0).tolist() == [[1, 7, 8], [1, 9, 2]]


def test_one_example_scores_sentence_bleu_so_a_short_exact_output_scores_100() -> None:
    task = TranslationTask.__new__(TranslationTask)  # example_score reads no state of the module
    assert task.example_score("Hallo Welt !", "Hallo Welt !", "Hello world !") == pytest.approx(100.0)
    for hypothesis, reference in zip(HYPOTHESES, REFERENCES, strict=True):
        expected = sacrebleu.sentence_bleu(hypothesis, [reference]).score
        assert task.example_score(hypothesis, reference, "") == pytest.approx(expected)


def test_a_batch_repeated_to_keep_ranks_even_counts_once_in_the_loss() -> None:
    task = TranslationTask(ScriptedModel(), ScriptedTokenizer(HYPOTHESES), optimizer=partial(torch.optim.SGD, lr=0.1))
    with torch.no_grad():
        task.model.bias.copy_(torch.arange(VOCAB, dtype=torch.float))  # each label token its own loss
    collate = Seq2SeqCollator(pad_token_id=0)
    rows = [([3, 2], [6, 2]), ([4, 2], [5, 7, 2]), ([5, 2], [2])]
    examples = [
        {"example_id": i, "input_ids": ids, "labels": labels, "source": "s", "target": "t"}
        for i, (ids, labels) in enumerate(rows)
    ]
    first, second = collate(examples[:2]), collate(examples[2:])
    for batch in (first, second, first):  # as a sampler padding an epoch for an even split over replicas does
        task.update_loss("test", batch)
    labels = torch.tensor([label for _, target in rows for label in target])
    expected = F.cross_entropy(torch.arange(VOCAB, dtype=torch.float).expand(len(labels), VOCAB), labels)
    assert task.corpus_loss("test") == pytest.approx(float(expected), rel=1e-6)
    assert math.isnan(task.corpus_loss("test"))  # reset: no tokens left


@pytest.mark.parametrize("sharded", [False, True])
def test_a_sharded_rank_with_nothing_to_sample_still_generates_with_the_others(
    sharded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = TranslationTask(
        ScriptedModel(),
        ScriptedTokenizer(HYPOTHESES),
        optimizer=partial(torch.optim.SGD, lr=0.1),
        max_generate_examples=2,
    )
    generated: list[int] = []
    generate = task.model.generate
    monkeypatch.setattr(task.model, "generate", lambda *args: generated.append(len(args[0])) or generate(*args))
    monkeypatch.setattr("weaver.tasks.seq2seq.in_lockstep", lambda model: sharded)
    examples = [
        {"example_id": i, "input_ids": [10 + i, 2], "labels": [6, 2], "source": "s", "target": "t"} for i in (3, 4)
    ]
    task.evaluation_step("val", Seq2SeqCollator(pad_token_id=0)(examples))  # no example among the first 2
    assert generated == ([1] if sharded else []) and task.generated["val"] == []


def test_a_validation_cut_short_generates_for_the_lowest_ids_it_reads() -> None:
    lowest_read: list[tuple[str, int, float]] = []

    def lowest_ids_read(split: str, count: int, batches_per_rank: float) -> set[int]:
        lowest_read.append((split, count, batches_per_rank))
        return {2, 4}

    task = TranslationTask(
        ScriptedModel(), ScriptedTokenizer(HYPOTHESES), optimizer=torch.optim.SGD, max_generate_examples=2
    )
    datamodule = SimpleNamespace(lowest_ids_read=lowest_ids_read)
    for sanity_checking in (True, False):
        task._trainer = SimpleNamespace(
            datamodule=datamodule, sanity_checking=sanity_checking, num_sanity_val_batches=[2], num_val_batches=[3]
        )
        task.on_validation_epoch_start()
    assert lowest_read == [("validation", 2, 2), ("validation", 2, 3)]
    examples = [
        {"example_id": i, "input_ids": [10 + i, 2], "labels": [6, 2], "source": f"s{i}", "target": "t"}
        for i in (0, 2, 3, 4)
    ]
    task.evaluation_step("val", Seq2SeqCollator(pad_token_id=0)(examples))
    assert [record["id"] for record in task.generated["val"]] == [2, 4]


def test_more_new_tokens_than_decoder_positions_are_refused_in_one_line() -> None:
    sizes = {"d_model": 16, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "ffn_dim": 32}
    model = build_weaver(VOCAB, max_positions=12, **sizes).eval()
    tokenizer = ScriptedTokenizer(HYPOTHESES)
    longest = GenerationConfig(max_new_tokens=12, min_new_tokens=12)
    TranslationTask(model, tokenizer, torch.optim.SGD, generation=longest)
    assert model.generate(torch.tensor([[3, 2]]), torch.ones(1, 2, dtype=torch.bool), longest).shape == (1, 12)
    with pytest.raises(ConfigError, match=r"^generation.max_new_tokens=13 exceeds the model's 12 decoder positions"):
        TranslationTask(model, tokenizer, torch.optim.SGD, generation=GenerationConfig(max_new_tokens=13))


def test_a_fused_optimizer_under_an_fp16_gradient_scaler_is_clipped_on_unscaled_gradients() -> None:
    """Lightning refuses to clip for a fused optimizer with a scaler (it unscales inside its step): the task
    unscales first and clips, and the scaler's step then applies exactly the clipped gradients."""

    def clipped_step(scaler: torch.amp.GradScaler | None) -> torch.Tensor:
        task = TranslationTask(ScriptedModel(), ScriptedTokenizer(HYPOTHESES), optimizer=torch.optim.SGD)
        optimizer = torch.optim.AdamW(task.parameters(), lr=0.1, fused=True)
        loss = (task.model.bias * torch.arange(VOCAB, dtype=torch.float)).sum() * 10  # a gradient norm of ~140
        (scaler.scale(loss) if scaler else loss).backward()
        task._trainer = SimpleNamespace(model=task, precision_plugin=SimpleNamespace(scaler=scaler))
        task.configure_gradient_clipping(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
        assert float(torch.linalg.vector_norm(task.model.bias.grad)) == pytest.approx(1.0, rel=1e-4)
        if scaler:
            scaler.step(optimizer)
        else:
            optimizer.step()
        return task.model.bias.detach().clone()

    torch.testing.assert_close(clipped_step(torch.amp.GradScaler("cpu", init_scale=1024.0)), clipped_step(None))
