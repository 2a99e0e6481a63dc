"""Trained tokenizers: special tokens, EOS handling, lossless round trips, and the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import MBartTokenizer
from transformers.models.mbart.tokenization_mbart import FAIRSEQ_LANGUAGE_CODES

from tests.models.tiny_hf import train_tokenizer
from weaver.data import PretrainedTokenizer, TrainedTokenizer
from weaver.data.tokenizer import fingerprint_tokenizer, save_tokenizer
from weaver.errors import ConfigError

TEXTS = [
    "Dieses Paket enthält die Dokumentation für Python 3.",
    "This package provides command-line tools (SSH, SCP & SFTP).",
    "Übergrößenträger: naïve café — 日本語 ✓",
] * 20


def batches():
    yield TEXTS


@pytest.mark.parametrize("algorithm", ["bpe", "unigram"])
def test_round_trip_and_special_tokens(tmp_path: Path, algorithm: str) -> None:
    tokenizer = TrainedTokenizer(algorithm, vocab_size=200, min_frequency=1).build(batches, "fp", str(tmp_path))
    assert [
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ] == [0, 1, 2, 3]
    for text in TEXTS[:3]:
        ids = tokenizer(text)["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id
        decoded = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if algorithm == "bpe":  # byte-level: exact
            assert decoded == text
        else:  # NFKC-normalised, but nothing is lost to unknown tokens in these texts
            assert decoded.replace(" ", "") == text.replace(" ", "") or tokenizer.unk_token_id in ids


def test_trained_tokenizer_is_cached_by_data_fingerprint(tmp_path: Path) -> None:
    calls = []

    def counting_batches():
        calls.append(1)
        yield TEXTS

    spec = TrainedTokenizer(vocab_size=200, min_frequency=1)
    first = spec.build(counting_batches, "fingerprint-a", str(tmp_path))
    second = spec.build(counting_batches, "fingerprint-a", str(tmp_path))
    assert len(calls) == 1
    assert first.get_vocab() == second.get_vocab()
    spec.build(counting_batches, "fingerprint-b", str(tmp_path))
    assert len(calls) == 2


def test_unknown_algorithm_is_rejected() -> None:
    with pytest.raises(ConfigError, match="tokenizer.algorithm must be one of"):
        TrainedTokenizer("wordpiece")


def test_pretrained_tokenizer_loads_a_saved_folder(tmp_path: Path) -> None:
    trained = TrainedTokenizer(vocab_size=200, min_frequency=1).build(batches, "fp", str(tmp_path))
    trained.save_pretrained(tmp_path / "saved")
    loaded = PretrainedTokenizer(str(tmp_path / "saved")).build(batches, "fp", None)
    assert loaded(TEXTS[0])["input_ids"] == trained(TEXTS[0])["input_ids"]


def test_saved_tokenizer_keeps_no_truncation_from_its_last_call(tmp_path: Path) -> None:
    trained = TrainedTokenizer(vocab_size=200, min_frequency=1).build(batches, "fp", str(tmp_path))
    cut = trained(TEXTS[1], truncation=True, max_length=5, padding="max_length")["input_ids"]
    save_tokenizer(trained, tmp_path / "saved")
    backend = Tokenizer.from_file(str(tmp_path / "saved" / "tokenizer.json"))
    assert (backend.truncation, backend.padding) == (None, None)
    assert len(backend.encode(TEXTS[1]).ids) > 5
    assert trained(TEXTS[1], truncation=True, max_length=5, padding="max_length")["input_ids"] == cut


def test_pretrained_hub_id_offline_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="Hub is unreachable.*local folder"):
        PretrainedTokenizer("weaver-tests/not-a-real-model").build(batches, "fp", None)


def test_checkpoints_of_weaver_0_1_restore_their_tokenizer(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from weaver.checkpoints import restore_tokenizer

    trained = TrainedTokenizer(vocab_size=200, min_frequency=1, extra_special_tokens=["<sep>"]).build(
        batches, "fp", str(tmp_path)
    )
    cfg = OmegaConf.create({"tokenizer": {"extra_special_tokens": ["<sep>"]}})
    restored = restore_tokenizer(trained.backend_tokenizer.to_str(), cfg)  # 0.1 stored the JSON alone
    text = TEXTS[0] + " <sep> " + TEXTS[1]
    assert restored(text)["input_ids"] == trained(text)["input_ids"]
    assert restored.pad_token_id == trained.pad_token_id and restored.decode([trained.eos_token_id]) == "</s>"


def test_the_cache_fingerprint_follows_a_target_language_that_only_targets_carry(tmp_path: Path) -> None:
    train_tokenizer(["<s>", "<pad>", "</s>", "<unk>", *FAIRSEQ_LANGUAGE_CODES, "<mask>"], 400).save(
        str(tmp_path / "tokenizer.json")
    )

    def mbart(tgt_lang: str) -> MBartTokenizer:
        return MBartTokenizer(tokenizer_file=str(tmp_path / "tokenizer.json"), src_lang="en_XX", tgt_lang=tgt_lang)

    german, french = mbart("de_DE"), mbart("fr_XX")
    assert german(text_target="Hallo")["input_ids"] != french(text_target="Hallo")["input_ids"]
    assert fingerprint_tokenizer(german) != fingerprint_tokenizer(french)
    assert fingerprint_tokenizer(german) == fingerprint_tokenizer(mbart("de_DE"))
