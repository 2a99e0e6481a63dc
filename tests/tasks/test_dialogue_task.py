"""The dialogue task: logged metrics are the corpus metrics whatever the batching, its config defaults, and a
`train(cfg)` smoke run on a slice of the real chitchat conversations."""

from __future__ import annotations

import json
from functools import partial
from importlib.resources import files
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader

from tests.conftest import compose_config, write_jsonl
from weaver.corpora.chitchat import chitchat_rows
from weaver.data.collate import Seq2SeqCollator
from weaver.instantiate import build, build_tokenizer
from weaver.metrics.dialogue import dialogue_scores
from weaver.tasks import DialogueTask

REFERENCES = ["i like dogs", "I am fine, thanks", "yes", "see you", "what about you?"]
HYPOTHESES = ["i like cats a lot.", "i am fine", "yes yes yes", "", "what about you"]


class ScriptedModel(torch.nn.Module):
    """Uniform logits for the loss; it "generates" its first source token."""

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
        {"example_id": i, "input_ids": [10 + i, 2], "labels": [6, 2], "source": f"<speaker1>turn {i}", "target": ref}
        for i, ref in enumerate(REFERENCES)
    ]
    return DataLoader(examples, batch_size=batch_size, collate_fn=Seq2SeqCollator(pad_token_id=0))


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_logged_metrics_are_the_corpus_metrics(batch_size: int) -> None:
    task = DialogueTask(ScriptedModel(), ScriptedTokenizer(), optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(task, dataloaders=loader(batch_size), verbose=False)
    expected, _ = dialogue_scores(HYPOTHESES, REFERENCES)
    for name, value in expected.items():
        assert metrics[f"test/{name}"] == pytest.approx(value, abs=1e-4)
    assert metrics["test/ppl"] == pytest.approx(8.0, rel=1e-4)  # uniform logits over 8 tokens
    assert task.metric_signatures["bleu"].startswith("nrefs:1")
    assert sorted(metrics) == sorted(task.logged_metrics("test"))  # what monitor.metric is checked against


@pytest.fixture(scope="module")
def chitchat_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 multi-turn chitchat conversations, cut to 6 turns each (~200 pairs)."""
    with (files("chitchat_dataset") / "dataset.json").open(encoding="utf-8") as file:
        raw = json.load(file)
    rows = [{**row, "turns": row["turns"][:6]} for row in chitchat_rows(raw) if len(row["turns"]) >= 2][:40]
    return write_jsonl(tmp_path_factory.mktemp("chitchat") / "train.jsonl", rows)


SMALL_DIALOGUE_RUN = [
    "task=dialogue",
    "model=weaver_tiny",
    "logger=csv",
    "hardware=cpu",
    "trainer.precision=32-true",
    "data.validation_fraction=0.1",
    "data.test_fraction=0.1",
    "data.max_tokens=2000",
    "data.eval_max_tokens=4000",
    "tokenizer.vocab_size=400",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "scheduler.num_warmup_steps=1",
    "generation.max_new_tokens=8",
    "generation.min_new_tokens=0",
    "task.max_generate_examples=16",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "print_config=false",
]


def small_dialogue_config(overrides: list[str], tmp_path: Path) -> DictConfig:
    cfg = compose_config([*SMALL_DIALOGUE_RUN, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


def test_the_tokenizer_keeps_whatever_markers_the_data_config_names(chitchat_slice: Path, tmp_path: Path) -> None:
    cfg = small_dialogue_config(
        [f"data.train_file={chitchat_slice}", "data.pair_builder.turn_separator='<turn>'"], tmp_path
    )
    data = build(cfg.data, "data", tokenizer=build_tokenizer(cfg), cache_dir=cfg.paths.cache_dir)
    assert {"<speaker1>", "<speaker2>", "<turn>"} <= set(data.tokenizer.all_special_tokens)


def test_ready_made_context_response_pairs_train_without_a_pair_builder(chitchat_slice: Path, tmp_path: Path) -> None:
    from weaver.cli.train import train

    conversations = [json.loads(line)["turns"] for line in chitchat_slice.open()]
    pairs = [{"context": turns[0]["text"], "response": turns[1]["text"]} for turns in conversations]
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", pairs * 3)
    overrides = [f"data.train_file={pairs_file}", "data.source_field=context", "data.target_field=response"]
    cfg = small_dialogue_config([*overrides, "data.pair_builder=null"], tmp_path)
    metrics, _ = train(cfg)
    assert "test/f1" in metrics


def test_train_smoke_run_on_chitchat_conversations(chitchat_slice: Path, tmp_path: Path) -> None:
    from weaver.cli.train import train

    metrics, objects = train(small_dialogue_config([f"data.train_file={chitchat_slice}"], tmp_path))
    expected = {"f1", "bleu", "distinct_1", "distinct_2", "length", "loss", "ppl"}
    assert {f"val/{name}" for name in expected} | {f"test/{name}" for name in expected} <= set(metrics)
    predictions = [json.loads(line) for line in (tmp_path / "run" / "test_predictions.jsonl").open()]
    assert len(predictions) == len(objects["datamodule"].pairs()["test"])
    assert predictions[0]["source"].startswith(("<speaker1>", "<speaker2>"))
    assert "<sep>" not in " ".join(p["hypothesis"] for p in predictions)  # markers are skipped when decoding
