"""Pretraining data: raw text as examples (RawText), T5's span corruption, and objectives replacing every split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_jsonl
from weaver.data import Seq2SeqDataModule, TrainedTokenizer
from weaver.data.collate import LABEL_PAD
from weaver.data.denoising import SpanCorruption, TextInfilling
from weaver.data.raw_text import RawText
from weaver.data.sources import load_file
from weaver.errors import ConfigError, DataError
from weaver.prompts import PromptTemplate

pytestmark = pytest.mark.usefixtures("single_thread")

PARAGRAPHS = [
    " ".join(f"w{(7 * i + j) % 53}" for j in range(12 + i % 9)) + ("\nsecond line of it" if i % 3 == 0 else "")
    for i in range(60)
]


class FakeTokenizer:
    """2 is EOS."""

    eos_token_id = 2


SENTINEL_IDS = list(range(900, 910))  # <extra_id_0> ... <extra_id_9>


def test_span_corruption_drops_spans_that_the_target_restores_with_sentinels() -> None:
    corruption = SpanCorruption(noise_density=0.15, mean_span_tokens=3.0, num_sentinels=10)
    ids = [100 + i for i in range(80)] + [2]
    special = np.array([False] * 80 + [True])
    for seed in range(30):
        source, target = corruption.pair(ids, special, FakeTokenizer(), SENTINEL_IDS, np.random.default_rng(seed))
        sentinels = [token for token in source if token >= 900]
        assert sentinels == list(range(900, 900 + len(sentinels))) and 1 <= len(sentinels) <= 10
        assert [token for token in target if token >= 900] == sentinels and target[-1] == 2
        assert source[-1] == 2  # special tokens are never dropped
        # Each sentinel in the source stands for the tokens after it in the target, up to the next sentinel.
        spans, current = {}, None
        for token in target[:-1]:
            if token >= 900:
                current = spans.setdefault(token, [])
            else:
                current.append(token)
        restored = [piece for token in source for piece in (spans[token] if token >= 900 else [token])]
        assert restored == ids
        assert all(spans.values())  # no empty span
        assert sum(map(len, spans.values())) == round(80 * 0.15)  # 12 noise tokens
        assert all(a < 900 or b < 900 for a, b in zip(source, source[1:], strict=False))  # spans never adjoin


def test_span_corruption_never_uses_more_spans_than_sentinels() -> None:
    corruption = SpanCorruption(noise_density=0.5, mean_span_tokens=1.0, num_sentinels=4)
    mask = corruption.noise_mask(40, np.random.default_rng(0))
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    assert mask.sum() == 20 and starts.sum() == 4 and not mask[0]
    assert not SpanCorruption().noise_mask(1, np.random.default_rng(0)).any()  # nothing to keep: no noise


@pytest.mark.parametrize(
    ("option", "value"),
    [("noise_density", 0.0), ("mean_span_tokens", 0.5), ("num_sentinels", 0), ("sentinel_format", "<x>")],
)
def test_bad_span_corruption_options_are_refused_naming_the_key(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"data.denoising.{option}"):
        SpanCorruption(**{option: value})


def test_raw_text_splits_long_texts_and_counts_what_it_skips(caplog: pytest.LogCaptureFixture) -> None:
    from datasets import Dataset

    rows = [{"body": " ".join(f"w{i}" for i in range(25))}, {"body": ""}, {"body": None}, {"body": "two words"}]
    builder = RawText(text_fields=["body"], max_words=10, min_words=3)
    with caplog.at_level(logging.WARNING):
        pairs = builder.build_pairs(Dataset.from_list(rows), "train")
    assert pairs["source"] == pairs["target"]
    assert [len(text.split()) for text in pairs["source"]] == [10, 10, 5]
    assert pairs["example_id"] == [0, 1, 2]
    assert "1 body empty" in caplog.text and "1 body missing" in caplog.text and "1 pieces under" in caplog.text
    with pytest.raises(DataError, match="text_fields"):
        builder.build_pairs(Dataset.from_list([{"body": "a b"}]), "validation")
    with pytest.raises(DataError, match="pair_builder.text_fields='text'"):
        RawText().build_pairs(Dataset.from_list(rows), "train")


def pretraining_datamodule(tmp_path: Path, denoising: object, **options: object) -> Seq2SeqDataModule:
    settings = {"max_source_length": 32, "max_target_length": 32, **options}
    return Seq2SeqDataModule(
        TrainedTokenizer(vocab_size=300, min_frequency=1),
        pair_builder=RawText(max_words=8),
        validation_fraction=0.1,
        test_fraction=0.1,
        cache_dir=str(tmp_path / "cache"),
        denoising=denoising,
        **settings,
    )


@pytest.mark.parametrize("objective", [TextInfilling, SpanCorruption])
def test_an_objective_replacing_pairs_corrupts_every_split_with_fixed_noise(tmp_path: Path, objective: type) -> None:
    text = tmp_path / "train.txt"
    text.write_text("\n\n".join(PARAGRAPHS), encoding="utf-8")
    data = pretraining_datamodule(tmp_path, objective(copies=2), train_file=str(text))
    splits = data.tokenized_splits()
    tokenizer = data.tokenizer
    marker = "<mask>" if objective is TextInfilling else "<extra_id_0>"
    assert marker in tokenizer.all_special_tokens
    marker_id = tokenizer.convert_tokens_to_ids(marker)
    pieces = {split: len(data.pairs()[split]) for split in ("train", "validation", "test")}
    assert len(splits["train"]) == 2 * pieces["train"]  # `copies` of the training texts, one of the others
    assert len(splits["validation"]) == pieces["validation"] and len(splits["test"]) == pieces["test"]
    for split in splits.values():
        assert all(marker_id in row for row in split["input_ids"])
        assert len(set(split["example_id"])) == len(split)
    if objective is TextInfilling:  # the target is the text itself
        assert all(tokenizer.decode(row, skip_special_tokens=True).split() for row in splits["validation"]["labels"])
    again = pretraining_datamodule(tmp_path / "again", objective(copies=2), train_file=str(text))
    assert again.tokenized_splits()["validation"]["input_ids"] == splits["validation"]["input_ids"]


def test_a_text_file_reads_one_row_per_paragraph(tmp_path: Path) -> None:
    text = tmp_path / "train.txt"
    text.write_text("\n\n".join(PARAGRAPHS), encoding="utf-8")
    data = pretraining_datamodule(tmp_path, TextInfilling(), train_file=str(text))
    pairs = data.pairs()
    assert sum(len(pairs[split]) for split in pairs) >= len(PARAGRAPHS)
    assert "second line of it" in " ".join(pairs["train"]["source"])


def test_a_text_file_replaces_the_default_corpus_whatever_its_fields(tmp_path: Path) -> None:
    """`task=pretrain data.data_dir=null data.train_file=books.txt`: the data config names the default corpus's
    fields, which a text file (one column, `text`) lacks."""
    text = tmp_path / "train.txt"
    text.write_text("\n\n".join(PARAGRAPHS), encoding="utf-8")
    builder = RawText(text_fields=["document", "summary"], max_words=8)
    data = Seq2SeqDataModule(
        TrainedTokenizer(vocab_size=300, min_frequency=1),
        pair_builder=builder,
        train_file=str(text),
        validation_fraction=0.1,
        test_fraction=0.1,
        cache_dir=str(tmp_path / "cache"),
        denoising=TextInfilling(),
    )
    assert "second line of it" in " ".join(data.pairs()["train"]["source"])
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": paragraph, "body": paragraph} for paragraph in PARAGRAPHS])
    with pytest.raises(DataError, match="text_fields='document': no column 'document'"):
        builder.build_pairs(load_file("train", str(rows), str(tmp_path / "cache")), "train")  # columns named: theirs


@pytest.mark.parametrize(("content", "message"), [(b"\n\n  \n", "is empty"), (b"ok text\n\xff\xfe bad\n", "not UTF-8")])
def test_bad_text_files_are_refused_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    text = tmp_path / "train.txt"
    text.write_bytes(content)
    with pytest.raises(DataError, match=f"data.train_file.*{message}"):
        pretraining_datamodule(tmp_path, TextInfilling(), train_file=str(text)).pairs()


def test_jsonl_rows_give_their_named_column(tmp_path: Path) -> None:
    rows = [{"text": paragraph, "id": i} for i, paragraph in enumerate(PARAGRAPHS)]
    rows = write_jsonl(tmp_path / "train.jsonl", rows)
    pairs = pretraining_datamodule(tmp_path, TextInfilling(), train_file=str(rows)).pairs()
    assert all(len(text.split()) <= 8 for text in pairs["train"]["source"])


def test_unlabelled_text_needs_an_objective_that_fits_the_model(tmp_path: Path) -> None:
    text = tmp_path / "train.txt"
    text.write_text("\n\n".join(PARAGRAPHS), encoding="utf-8")
    with pytest.raises(ConfigError, match="denoising=text_infilling or denoising=span_corruption"):
        pretraining_datamodule(tmp_path, None, train_file=str(text))
    with pytest.raises(ConfigError, match="decoder-only model pretrains .* set denoising=none"):
        Seq2SeqDataModule(
            TrainedTokenizer(vocab_size=300),
            pair_builder=RawText(),
            train_file=str(text),
            denoising=TextInfilling(),
            prompt_template="{source}",
        )


def causal_datamodule(tmp_path: Path, **options: object) -> Seq2SeqDataModule:
    """The texts as a decoder-only model pretrains on them: no denoising, a prompt template."""
    text = tmp_path / "train.txt"
    text.write_text("\n\n".join(PARAGRAPHS), encoding="utf-8")
    causal = {"prompt_template": "{source}", "max_source_length": 1, "max_target_length": 12}
    return pretraining_datamodule(tmp_path, None, train_file=str(text), **causal, **options)


def test_causal_lm_examples_are_each_text_whole_after_one_start_token(tmp_path: Path) -> None:
    data = causal_datamodule(tmp_path)
    tokenizer, pairs = data.tokenizer, data.pairs()
    for split in ("train", "validation", "test"):
        examples = data.tokenized_splits()[split]
        assert len(examples) == len(pairs[split])  # every split's examples are its texts
        for example, text in zip(examples, pairs[split]["target"], strict=True):
            assert example["input_ids"] == [tokenizer.bos_token_id]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert example["labels"] == [*ids[:11], tokenizer.eos_token_id]


def test_a_tokenizer_whose_bos_is_its_eos_starts_each_text_with_it() -> None:
    class GPT2Like:
        bos_token_id = eos_token_id = 50256

    assert PromptTemplate.text_start(GPT2Like()) == [50256]


def test_packed_causal_lm_rows_predict_each_text_from_its_own_start(tmp_path: Path) -> None:
    data = causal_datamodule(tmp_path, packing=True, max_tokens=64, packing_row_length=32)
    train = data.tokenized_splits()["train"]
    start = data.tokenizer.bos_token_id
    batches = list(data.train_dataloader())
    assert sum(int(batch["document_ids"].max(dim=1).values.add(1).sum()) for batch in batches) == len(train)
    assert any(int(batch["document_ids"].max()) > 0 for batch in batches)  # short texts share rows
    for batch in batches:
        for row in range(batch["input_ids"].size(0)):
            documents = batch["document_ids"][row]
            for number in documents.unique().tolist():
                if number < 0:
                    continue
                where = documents.eq(number)
                ids, labels = batch["input_ids"][row][where], batch["labels"][row][where]
                positions = batch["position_ids"][row][where]
                assert ids[0] == start and torch.equal(positions, torch.arange(len(ids)))
                # Position t predicts token t + 1 of the same text; its last token (EOS) predicts nothing.
                assert torch.equal(labels[:-1], ids[1:]) and labels[-1] == LABEL_PAD
