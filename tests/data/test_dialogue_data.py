"""Dialogue data: conversations -> (context, response) pairs, history window, left truncation by whole turns,
bad data counted, splits by conversation."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import PreTrainedTokenizerFast

from tests.conftest import write_jsonl
from tests.models.tiny_hf import fast_tokenizer
from weaver.data import Seq2SeqDataModule, TrainedTokenizer
from weaver.data.dialogue import DialoguePairs
from weaver.data.tokenizer import GivenTokenizer
from weaver.errors import ConfigError, DataError

TOKENS = ["<speaker1>", "<speaker2>", "<sep>"]


def turns(*texts: str, speakers: str = "ab") -> list[dict[str, str]]:
    return [{"speaker": speakers[i % len(speakers)], "text": text} for i, text in enumerate(texts)]


def conversations(count: int, length: int = 4) -> list[dict]:
    return [
        {"id": f"c{i}", "turns": turns(*(f"conversation {i} turn {t} is about topic {i % 7}" for t in range(length)))}
        for i in range(count)
    ]


def datamodule(
    tmp_path: Path, rows: list[dict], builder: DialoguePairs | None = None, tokens: list[str] = TOKENS, **kwargs
) -> Seq2SeqDataModule:
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    options = {"train_file": str(train), "cache_dir": str(tmp_path / "cache")}
    options.update({"validation_fraction": 0.1, "test_fraction": 0.1, **kwargs})
    tokenizer = TrainedTokenizer(vocab_size=400, min_frequency=1, extra_special_tokens=tokens)
    return Seq2SeqDataModule(tokenizer, pair_builder=builder or DialoguePairs(), **options)


def test_each_turn_after_the_first_answers_its_history_window() -> None:
    builder = DialoguePairs(max_history_turns=2)
    pairs, skipped = builder.conversation_pairs(turns("hi", "hello there", "how are you?", "fine", "bye"))
    assert skipped == []
    assert pairs == [
        (["<speaker1>hi"], "hello there"),
        (["<speaker1>hi", "<speaker2>hello there"], "how are you?"),
        (["<speaker2>hello there", "<speaker1>how are you?"], "fine"),
        (["<speaker1>how are you?", "<speaker2>fine"], "bye"),
    ]


def test_without_a_history_limit_every_context_is_the_whole_conversation_so_far() -> None:
    pairs, _ = DialoguePairs(max_history_turns=None).conversation_pairs(turns("hi", "hello", "how are you?", "fine"))
    assert pairs[-1] == (["<speaker1>hi", "<speaker2>hello", "<speaker1>how are you?"], "fine")


def test_the_last_turn_mode_gives_one_context_per_conversation_awaiting_its_reply(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    builder = DialoguePairs(max_history_turns=2, topic_field="prompt")
    rows = [
        {"id": "long", "prompt": "pets", "turns": turns("hi", "hello there", "got a dog?")},
        {"id": "single", "prompt": "", "turns": turns("anyone home?")},
        {"id": "none", "turns": []},
    ]
    with caplog.at_level(logging.INFO):
        pairs = builder.build_pairs(Dataset.from_list(rows), "input", last_turn=True)
    assert [(row["conversation_id"], row["context"], row["target"]) for row in pairs] == [
        ("long", ["<topic>pets", "<speaker2>hello there", "<speaker1>got a dog?"], ""),
        ("single", ["<speaker1>anyone home?"], ""),  # one turn is enough to answer
    ]
    assert pairs["example_id"] == [0, 1]
    assert "3 conversations -> 2 contexts ending with their last turn" in caplog.text
    assert "skipped 1 conversations without turns" in caplog.text
    # The same rows as (history, next turn) pairs: only "long" has a turn after its first.
    assert builder.build_pairs(Dataset.from_list(rows), "input")["target"] == ["hello there", "got a dog?"]
    with pytest.raises(DataError, match="every one of its 1 conversations has no usable turn"):
        DialoguePairs().build_pairs(Dataset.from_list(rows[2:]), "input", last_turn=True)


def test_speakers_are_numbered_by_first_appearance_and_consecutive_turns_merge() -> None:
    rows = [
        {"speaker": "bob", "text": "hey"},
        {"speaker": "amy", "text": "hi"},
        {"speaker": "amy", "text": "  what's   up?"},
        {"speaker": "bob", "text": "not much <sep> really"},
    ]
    pairs, _ = DialoguePairs().conversation_pairs(rows)
    assert pairs[-1] == (["<speaker1>hey", "<speaker2>hi what's up?"], "not much really")
    # Plain strings: speakers alternate.
    pairs, _ = DialoguePairs().conversation_pairs(["a", "b", "c"])
    assert pairs[-1][0] == ["<speaker1>a", "<speaker2>b"]


def test_bad_conversations_and_turns_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = conversations(40) + [
        {"id": "single", "turns": turns("anyone home?")},
        {"id": "none", "turns": []},
        {"id": "missing"},
        {"id": "gap", "turns": turns("hello", "   ", "still there?", "yes")},
    ]
    dm = datamodule(tmp_path, rows)  # 4 and 5 conversations carved: at least one usable in each
    with caplog.at_level(logging.INFO):
        pairs = dm.pairs()
    message = " ".join(caplog.messages)
    counts = {
        reason: sum(int(n) for n in re.findall(rf"(\d+) {reason}", message))
        for reason in ("single-turn conversations", "conversations without turns", "turns with empty text")
    }
    assert counts == {"single-turn conversations": 1, "conversations without turns": 2, "turns with empty text": 1}
    # "gap": the empty turn is dropped, "hello" and "still there?" are one speaker's turn.
    gap = [row for split in pairs.values() for row in split if row["conversation_id"] == "gap"]
    assert [(row["source"], row["target"]) for row in gap] == [("<speaker1>hello still there?", "yes")]
    assert sum(len(split) for split in pairs.values()) == 40 * 3 + 1
    for split in pairs.values():
        assert split["example_id"] == list(range(len(split)))


def test_no_conversation_is_shared_between_splits(tmp_path: Path) -> None:
    pairs = datamodule(tmp_path, conversations(60)).pairs()
    ids = {split: set(pairs[split]["conversation_id"]) for split in pairs}
    assert len(ids["validation"]) == 6 and len(ids["test"]) == 6 and len(ids["train"]) == 48
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    for split, data in pairs.items():  # every pair of a conversation stays with it
        assert len(data) == 3 * len(ids[split])


def test_left_truncation_drops_the_oldest_whole_turns(tmp_path: Path) -> None:
    long_turns = [f"turn {t} " + " ".join(f"word{t}x{w}" for w in range(6)) for t in range(6)]
    rows = conversations(30) + [{"id": "long", "turns": turns(*long_turns)}]
    dm = datamodule(tmp_path, rows, max_source_length=40, validation_fraction=0.05, test_fraction=0.05)
    dm.setup()
    tokenizer = dm.tokenizer
    checked = 0
    for split in dm.datasets.values():
        for row in split:
            assert len(row["input_ids"]) <= 40
            kept = row["source"].split("<sep>")
            # The kept turns are the most recent ones of the context, each whole.
            assert kept == row["context"][len(row["context"]) - len(kept) :]
            assert tokenizer(row["source"])["input_ids"] == row["input_ids"]
            if row["conversation_id"] == "long" and row["target"] == long_turns[-1]:
                assert row["source_truncated"] and 1 <= len(kept) < len(row["context"])
                assert kept[-1] == "<speaker1>" + long_turns[-2]
                checked += 1
    assert checked == 1


def test_a_topic_starts_every_context_and_survives_left_truncation(tmp_path: Path) -> None:
    builder = DialoguePairs(max_history_turns=2, topic_field="prompt")
    assert builder.special_tokens == [*TOKENS, "<topic>"]
    pairs, _ = builder.conversation_pairs(turns("hi", "hello", "pets?"), topic="  Do you have <sep> pets? ")
    assert pairs[-1] == (["<topic>Do you have pets?", "<speaker1>hi", "<speaker2>hello"], "pets?")
    # Without a topic (missing, not text), a context is its turns alone.
    assert builder.conversation_pairs(turns("hi", "hello"), topic=None)[0] == [(["<speaker1>hi"], "hello")]

    words = " ".join(f"word{w}" for w in range(8))
    rows = [{**row, "prompt": "what is the topic"} for row in conversations(30)]
    rows += [{"id": "long", "prompt": "short topic", "turns": turns(*(f"turn {t} {words}" for t in range(4)))}]
    rows += [{"id": "wordy", "prompt": " ".join(f"topic{w}" for w in range(30)), "turns": turns("a b", "c d")}]
    options = {"validation_fraction": 0.05, "test_fraction": 0.05, "max_source_length": 32}
    # The topic marker joins the configured special tokens by itself.
    dm = datamodule(tmp_path, rows, DialoguePairs(max_history_turns=3, topic_field="prompt"), **options)
    dm.setup()
    assert dm.tokenizer.convert_ids_to_tokens(dm.tokenizer("<topic>short topic")["input_ids"])[0] == "<topic>"
    assert dm.tokenizer_source.extra_special_tokens == [*TOKENS, "<topic>"]
    by_id = {}
    for split in dm.datasets.values():
        for row in split:
            assert len(row["input_ids"]) <= 32
            by_id.setdefault(row["conversation_id"], []).append(row)
    for row in by_id["long"]:
        kept = row["source"].split("<sep>")
        # The topic stays first; the most recent whole turns follow it.
        assert kept[0] == "<topic>short topic"
        assert kept[1:] == row["context"][len(row["context"]) - len(kept) + 1 :]
    assert any(row["source_truncated"] for row in by_id["long"])
    # A topic longer than half the room gives way to the turns.
    (wordy,) = by_id["wordy"]
    assert wordy["source"] == "<speaker1>a b" and wordy["source_truncated"]


def test_conversations_without_a_topic_are_counted_and_a_wrong_topic_field_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [{**row, "prompt": "a topic" if i % 3 else None} for i, row in enumerate(conversations(30))]
    builder = DialoguePairs(topic_field="prompt")
    dm = datamodule(tmp_path, rows, builder, tokens=builder.special_tokens)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    untopical = sum(1 for split in dm.pairs().values() for row in split if row["context"][0].startswith("<speaker"))
    counts = [int(n) for n in re.findall(r"(\d+) of \d+ pairs have no topic \('prompt' missing", caplog.text)]
    assert untopical > 0 and sum(counts) == untopical
    with pytest.raises(DataError, match="data.pair_builder.topic_field='promt': no column 'promt'"):
        datamodule(tmp_path, rows, DialoguePairs(topic_field="promt"), tokens=builder.special_tokens).setup()


def test_a_single_too_long_turn_keeps_its_end(tmp_path: Path) -> None:
    rows = conversations(30) + [{"id": "long", "turns": turns(" ".join(f"w{i}" for i in range(80)), "short answer")}]
    dm = datamodule(tmp_path, rows, max_source_length=16, validation_fraction=0.05, test_fraction=0.05)
    dm.setup()
    (row,) = [r for split in dm.datasets.values() for r in split if r["conversation_id"] == "long"]
    assert row["source_truncated"] and len(row["input_ids"]) <= 16
    assert row["source"].startswith("<speaker1>") and row["source"].endswith("w78 w79")
    assert dm.tokenizer.convert_ids_to_tokens(row["input_ids"])[0] == "<speaker1>"


def test_markers_are_single_special_tokens_dropped_when_decoding(tmp_path: Path) -> None:
    dm = datamodule(tmp_path, conversations(30))
    tokenizer = dm.tokenizer
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    ids = tokenizer("<speaker1>conversation 3<sep><speaker2>turn 2")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[0]) == "<speaker1>"
    assert [tokenizer.convert_ids_to_tokens(i) for i in ids].count("<sep>") == 1
    assert tokenizer.decode(ids, skip_special_tokens=True).split() == ["conversation", "3", "turn", "2"]
    # Not configured, they join a tokenizer to be trained by themselves ...
    options = {"pair_builder": DialoguePairs(), "train_file": str(tmp_path / "train.jsonl")}
    plain = Seq2SeqDataModule(
        TrainedTokenizer(vocab_size=400, min_frequency=1), cache_dir=str(tmp_path / "c"), **options
    )
    assert plain.tokenizer.convert_ids_to_tokens(plain.tokenizer("<speaker1>hi")["input_ids"])[0] == "<speaker1>"
    # ... but a tokenizer built already that splits them is an error that says what to set.
    without = TrainedTokenizer(vocab_size=400, min_frequency=1).build(
        lambda: iter([["hello there", "<speaker1> general kenobi"]]), "no-markers", str(tmp_path / "t")
    )
    given = Seq2SeqDataModule(GivenTokenizer(without), cache_dir=str(tmp_path / "g"), **options)
    with pytest.raises(ConfigError, match=r"'<speaker1>'.*tokenizer.extra_special_tokens"):
        _ = given.tokenizer


def test_tokenized_splits_are_found_again_in_the_same_process(tmp_path: Path) -> None:
    dm = datamodule(tmp_path, conversations(30))
    first, second = dm.tokenized_splits(), dm.tokenized_splits()
    assert first["train"].cache_files == second["train"].cache_files


def test_builder_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_history_turns must be a positive integer or null"):
        DialoguePairs(max_history_turns=0)
    with pytest.raises(ConfigError, match="speaker_tokens"):
        DialoguePairs(speaker_tokens=[])
    with pytest.raises(ConfigError, match="topic_token must be a token without spaces"):
        DialoguePairs(topic_field="prompt", topic_token="<the topic>")
    with pytest.raises(ConfigError, match="must differ from the speaker tokens and the turn separator"):
        DialoguePairs(topic_field="prompt", topic_token="<s")
    with pytest.raises(ConfigError, match="source_field and data.target_field"):
        Seq2SeqDataModule(TrainedTokenizer(), train_file="x.jsonl")


def marked_tokenizer(kind: str, tmp_path: Path) -> PreTrainedTokenizerFast:
    """A fast tokenizer of `kind` with the dialogue markers as special tokens: Weaver's trained byte-level BPE or
    Unigram/Metaspace, or a T5/BART/Marian-style one."""
    markers = [*TOKENS, "<topic>"]
    if kind in ("bpe", "unigram"):
        texts = [row["turns"][0]["text"] for row in conversations(40)]
        source = TrainedTokenizer(algorithm=kind, vocab_size=300, min_frequency=1, extra_special_tokens=markers)
        return source.build(lambda: iter([texts]), kind, str(tmp_path))
    tokenizer = fast_tokenizer(kind)
    tokenizer.add_special_tokens({"additional_special_tokens": markers})
    return tokenizer


@pytest.mark.parametrize("kind", ["bpe", "unigram", "t5", "bart", "marian"])
def test_contexts_joined_from_their_turns_ids_equal_the_tokenizers_own(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = marked_tokenizer(kind, tmp_path)
    builder = DialoguePairs(max_history_turns=None, topic_field="prompt")
    talk = [f"turn {t}: café déjà vu,  spaced   out {t * 7}!" for t in range(12)] + ["x " * 150, "bye"]
    contexts = [context for context, _ in builder.conversation_pairs(turns(*talk), topic="what is  it?")[0]]
    batch = {"source": [builder.turn_separator.join(c) for c in contexts], "context": contexts}
    checked = []
    assembled_fit = DialoguePairs.assembled_fit
    spy = staticmethod(lambda *args: checked.append(assembled_fit(*args)) or checked[-1])
    monkeypatch.setattr(DialoguePairs, "assembled_fit", spy)
    joined = builder.encode_sources(tokenizer, batch, 128, "chat: ")
    assert checked == [True]  # the ids were joined from the turns', and the check found them the tokenizer's own
    monkeypatch.setattr(DialoguePairs, "splits_at_markers", lambda *_: False)
    whole = builder.encode_sources(tokenizer, batch, 128, "chat: ")
    assert joined == whole
    assert any(whole["source_truncated"]) and not all(whole["source_truncated"])
    topic, last = whole["source"][-1].split("<sep>")  # the long turn alone, cut from the left, after the topic
    assert topic == "<topic>what is it?" and last.startswith("<speaker1>x x") and last.count("x") < 150
    assert max(map(len, whole["input_ids"])) <= 128


def test_a_separator_that_is_not_a_marker_tokenizes_contexts_whole(tmp_path: Path) -> None:
    tokenizer = marked_tokenizer("bpe", tmp_path)
    assert DialoguePairs().splits_at_markers(tokenizer)
    assert not DialoguePairs(turn_separator="\n").splits_at_markers(tokenizer)
    assert not DialoguePairs(speaker_tokens=["<speaker1>", "<other>"]).splits_at_markers(tokenizer)
