"""Denoising examples (text infilling) mixed into the training split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_jsonl
from weaver.data import Seq2SeqDataModule, TrainedTokenizer
from weaver.data.denoising import TextInfilling, word_starts
from weaver.data.tokenizer import GivenTokenizer
from weaver.errors import ConfigError

WORDS = [f"word{i}" for i in range(19)]
ROWS = [{"document": " ".join(WORDS[i % 7 :] + WORDS[: i % 7]), "summary": f"summary {i}"} for i in range(40)]


def datamodule(tmp_path: Path, denoising: TextInfilling | None, special: tuple[str, ...] = ("<mask>",)):
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = write_jsonl(tmp_path / "train.jsonl", ROWS)
    return Seq2SeqDataModule(
        TrainedTokenizer(vocab_size=300, min_frequency=1, extra_special_tokens=special),
        source_field="document",
        target_field="summary",
        train_file=str(train),
        validation_fraction=0.1,
        test_fraction=0.1,
        max_source_length=64,
        max_target_length=64,
        cache_dir=str(tmp_path / "cache"),
        denoising=denoising,
    )


def test_word_starts_follow_the_markers_and_special_tokens() -> None:
    tokens = ["\u0120lib", "g", "pod", "\u0120is", "</s>", "x"]
    special = np.array([False, False, False, False, True, False])
    assert word_starts(tokens, special).tolist() == [True, False, False, True, True, True]
    assert word_starts(["a", "b"], np.zeros(2, dtype=bool)).all()  # no markers: every token is a word


def test_whole_word_spans_become_one_mask_each_and_special_tokens_stay() -> None:
    infilling = TextInfilling(mask_ratio=0.3, mean_span_words=2.0)
    # Ten words of two pieces each, then EOS (id 2); mask id 9.
    ids = [100 + i for i in range(20)] + [2]
    starts = np.array([i % 2 == 0 for i in range(20)] + [True])
    special = np.array([False] * 20 + [True])
    for seed in range(20):
        out = infilling.corrupt(ids, starts, special, mask_id=9, rng=np.random.default_rng(seed))
        assert out[-1] == 2 and 9 in out
        assert all(not (a == 9 and b == 9) for a, b in zip(out, out[1:], strict=False))  # one mask per span
        kept = [token for token in out if token != 9]
        assert kept == [token for token in ids if token in kept]  # order kept, nothing invented
        # Whole words: a word's two pieces are kept or dropped together; 3 of the 10 words are dropped.
        assert all((100 + 2 * w in kept) == (101 + 2 * w in kept) for w in range(10))
        assert len(kept) == 21 - 2 * 3


def test_training_split_gains_corrupted_copies_to_reconstruct(tmp_path: Path) -> None:
    plain = datamodule(tmp_path / "plain", None).tokenized_splits()
    data = datamodule(tmp_path / "noised", TextInfilling(copies=2, mask_ratio=0.4)).tokenized_splits()
    train, count = data["train"], len(plain["train"])
    assert len(train) == 3 * count
    assert len(data["validation"]) == len(plain["validation"]) and len(data["test"]) == len(plain["test"])
    assert len(set(train["example_id"])) == len(train)
    mask_id = datamodule(tmp_path / "noised", None).tokenizer.convert_tokens_to_ids("<mask>")
    for original, noised in ((train[i], train[count + i]) for i in range(count)):
        assert noised["labels"] == original["input_ids"] and noised["target"] == original["source"]
        assert mask_id in noised["input_ids"] and len(noised["input_ids"]) < len(original["input_ids"])
    # The two copies differ, and the same data module options give the same noise again.
    assert train[count]["input_ids"] != train[2 * count]["input_ids"]
    again = datamodule(tmp_path / "again", TextInfilling(copies=2, mask_ratio=0.4)).tokenized_splits()
    assert again["train"]["input_ids"] == train["input_ids"]


def test_the_corrupted_copies_are_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The data module builds its splits in prepare_data and again in setup."""
    data = datamodule(tmp_path, TextInfilling(copies=2))
    with caplog.at_level(logging.INFO, logger="weaver.data.denoising"):
        data.prepare_data()
        data.setup("fit")
    assert [message for message in caplog.messages if message.startswith("Denoising:")] == [
        f"Denoising: 2 corrupted copies of {len(data.pairs()['train'])} train texts ({data.denoising.describe()})."
    ]


def test_mask_token_joins_a_trained_tokenizers_special_tokens(tmp_path: Path) -> None:
    data = datamodule(tmp_path, TextInfilling(), special=())
    data.tokenized_splits()
    assert data.tokenizer_source.extra_special_tokens == ["<mask>"]
    assert "<mask>" in data.tokenizer.all_special_tokens
    assert data.tokenizer("a <mask> b", add_special_tokens=False).tokens().count("<mask>") == 1


def test_a_given_tokenizer_without_the_mask_token_is_refused(tmp_path: Path) -> None:
    trained = datamodule(tmp_path / "plain", None, special=()).tokenizer
    data = datamodule(tmp_path / "given", TextInfilling(), special=())
    data.tokenizer_source = GivenTokenizer(trained)
    with pytest.raises(ConfigError, match=r"data.denoising.mask_token: .<mask>. is not a special token"):
        data.tokenized_splits()


@pytest.mark.parametrize(
    ("option", "value"), [("copies", 0), ("copies", 1.5), ("mask_ratio", 1.0), ("mean_span_words", 0.0)]
)
def test_options_are_checked(option: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"data.denoising.{option}"):
        TextInfilling(**{option: value})
