"""The recall set: a query, then keyed documents, one of them the queried one; its summary is the target."""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import pytest
from datasets import Dataset
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from weaver.data.recall_set import RecallSetPairs
from weaver.errors import ConfigError, DataError

ROWS = [
    {"id": f"id{i}", "name": f"pkg{i}", "document": f"Document {i} text.", "summary": f"summary {i}"} for i in range(30)
]


def documents_in(source: str) -> list[tuple[str, str]]:
    """(key, document) of each document of a source, in order."""
    return re.findall(r"<doc> (\S+): (Document \d+ text\.)", source)


def test_every_source_holds_the_queried_document_once_among_distinct_others() -> None:
    pairs = RecallSetPairs(num_documents=5).build_pairs(Dataset.from_list(ROWS), "train")
    assert len(pairs) == len(ROWS)  # every training row is queried once
    for example in pairs:
        query, _, body = example["source"].partition(" <query> ")
        documents = documents_in(body)
        assert len(documents) == 5 and len(set(documents)) == 5
        index = int(query.removeprefix("pkg"))
        assert documents[example["position"]] == (query, f"Document {index} text.")
        assert example["target"] == f"summary {index}"


def test_examples_are_the_same_for_the_same_settings_and_differ_by_seed() -> None:
    data = Dataset.from_list(ROWS)
    first = RecallSetPairs(num_documents=4).build_pairs(data, "validation")["source"]
    assert RecallSetPairs(num_documents=4).build_pairs(data, "validation")["source"] == first
    assert RecallSetPairs(num_documents=4, seed=1).build_pairs(data, "validation")["source"] != first


def test_queried_documents_sit_all_over_the_source() -> None:
    positions = RecallSetPairs(num_documents=10).build_pairs(Dataset.from_list(ROWS), "train")["position"]
    assert min(positions) <= 1 and max(positions) >= 8


def test_evaluation_splits_take_their_own_length_and_count() -> None:
    builder = RecallSetPairs(num_documents=2, eval_num_documents=6, eval_max_examples=7)
    test = builder.build_pairs(Dataset.from_list(ROWS), "test")
    assert len(test) == 7 and all(len(documents_in(source)) == 6 for source in test["source"])
    inputs = builder.build_pairs(Dataset.from_list(ROWS), "input")  # predict.py: every usable row, uncapped
    assert len(inputs) == len(ROWS) and all(len(documents_in(source)) == 6 for source in inputs["source"])
    assert len(documents_in(builder.build_pairs(Dataset.from_list(ROWS), "train")[0]["source"])) == 2


def test_training_examples_draw_their_count_between_min_and_num_documents() -> None:
    builder = RecallSetPairs(num_documents=4, min_documents=1, eval_num_documents=6)
    train = builder.build_pairs(Dataset.from_list(ROWS), "train")
    counts = [len(documents_in(source)) for source in train["source"]]
    assert set(counts) == {1, 2, 3, 4}
    for example, count in zip(train, counts, strict=True):
        key = example["source"].partition(" <query> ")[0]
        assert documents_in(example["source"])[example["position"]][0] == key and example["position"] < count
    test = builder.build_pairs(Dataset.from_list(ROWS), "test")
    assert all(len(documents_in(source)) == 6 for source in test["source"])  # evaluation keeps its own count
    with pytest.raises(ConfigError, match="min_documents=5 exceeds num_documents=4"):
        RecallSetPairs(num_documents=4, min_documents=5)


def test_keys_come_from_a_file_joined_on_the_row_id_and_rows_without_one_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "names.json.gz"
    keys.write_bytes(gzip.compress(json.dumps({row["id"]: f"name-{row['id']}" for row in ROWS[:20]}).encode()))
    rows = [{key: value for key, value in row.items() if key != "name"} for row in ROWS]
    rows[3]["document"] = "  "
    with caplog.at_level(logging.WARNING):
        pairs = RecallSetPairs(num_documents=3, keys_file=str(keys)).build_pairs(Dataset.from_list(rows), "train")
    assert pairs["example_id"] == [i for i in range(20) if i != 3]  # input rows, as predict.py's `id` promises
    assert "skipped 11 of 30 rows (10 key missing, 1 document empty)" in caplog.text
    assert all(source.startswith("name-id") for source in pairs["source"])


def test_rows_with_their_own_key_keep_it_where_a_keys_file_is_set(tmp_path: Path) -> None:
    """A file in the data's own format (`name` beside `id`), given to a checkpoint whose config joins keys from the
    shipped corpus's keys file, which knows none of its ids."""
    keys = tmp_path / "names.json.gz"
    keys.write_bytes(gzip.compress(json.dumps({"elsewhere": "other"}).encode()))
    pairs = RecallSetPairs(num_documents=3, keys_file=str(keys)).build_pairs(Dataset.from_list(ROWS), "test")
    assert all(source.startswith("pkg") for source in pairs["source"])


def test_renamed_training_examples_query_the_new_name_of_the_queried_document_and_evaluation_keeps_true_names() -> None:
    data = Dataset.from_list(ROWS)
    builder = RecallSetPairs(num_documents=5, eval_num_documents=5, rename_rate=0.5)
    renamed = 0
    for example in builder.build_pairs(data, "train"):
        query, _, body = example["source"].partition(" <query> ")
        documents = documents_in(body)
        assert len({key for key, _ in documents}) == 5  # every document keeps a name of its own
        key, document = documents[example["position"]]
        assert key == query and example["target"] == f"summary {document.split()[1]}"
        renamed += any(key != f"pkg{document.split()[1]}" for key, document in documents)
    assert 0.3 * len(ROWS) < renamed < 0.7 * len(ROWS)
    assert builder.build_pairs(data, "train")["source"] == builder.build_pairs(data, "train")["source"]
    unrenamed = RecallSetPairs(num_documents=5, eval_num_documents=5)
    assert builder.build_pairs(data, "test")["source"] == unrenamed.build_pairs(data, "test")["source"]
    for example in builder.build_pairs(data, "test"):
        assert all(key == f"pkg{document.split()[1]}" for key, document in documents_in(example["source"]))


def test_bad_settings_and_data_name_the_key() -> None:
    for count in (0, None):
        with pytest.raises(ConfigError, match="data.pair_builder.num_documents must be a positive integer"):
            RecallSetPairs(num_documents=count)
    with pytest.raises(ConfigError, match="data.pair_builder.rename_rate must be a number from 0 to 1, got 1.5"):
        RecallSetPairs(rename_rate=1.5)
    with pytest.raises(DataError, match="eval_num_documents=40 exceeds the 30 usable rows of the test split"):
        RecallSetPairs(eval_num_documents=40).build_pairs(Dataset.from_list(ROWS), "test")
    with pytest.raises(DataError, match="data.pair_builder.key_field='title': no column 'title'"):
        RecallSetPairs(key_field="title").build_pairs(Dataset.from_list(ROWS), "train")


def word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``texts``' words, keeping the recall set's markers whole."""
    words = sorted({word for text in texts for word in text.split()} - {"<query>", "<doc>"})
    vocab = {token: index for index, token in enumerate(["<pad>", "<unk>", "<query>", "<doc>", *words])}
    model = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token="<pad>", unk_token="<unk>", additional_special_tokens=["<query>", "<doc>"]
    )


def test_the_relevant_spans_are_the_queried_documents_tokens_and_the_query_goes_where_asked() -> None:
    builder = RecallSetPairs(num_documents=6)
    pairs = builder.build_pairs(Dataset.from_list(ROWS), "train")[:10]
    tokenizer = word_tokenizer(pairs["source"])
    encoded = builder.encode_sources(tokenizer, pairs, max_length=512)
    for ids, (span,), (query,), source, target in zip(
        encoded["input_ids"],
        encoded["relevant_spans"],
        encoded["ignored_spans"],
        pairs["source"],
        pairs["example_id"],
        strict=True,
    ):
        key = source.split()[0]
        assert tokenizer.decode(ids[slice(*span)]) == f"<doc> {key}: Document {target} text."
        assert tokenizer.decode(ids[slice(*query)]) == f"{key} <query>"
    cut = builder.encode_sources(tokenizer, pairs, max_length=7)  # the query and the first document alone
    for spans, position in zip(cut["relevant_spans"], pairs["position"], strict=True):
        assert spans == [[2, 7] if position == 0 else [0, 0]]
    relevant = RecallSetPairs(num_documents=6, query_relevance="relevant").encode_sources(tokenizer, pairs, 512)
    both = zip(encoded["relevant_spans"], encoded["ignored_spans"], strict=True)
    assert relevant["relevant_spans"] == [[*spans, *query] for spans, query in both]
    assert relevant["ignored_spans"] == [[]] * 10
    irrelevant = RecallSetPairs(num_documents=6, query_relevance="irrelevant").encode_sources(tokenizer, pairs, 512)
    assert irrelevant["relevant_spans"] == encoded["relevant_spans"] and irrelevant["ignored_spans"] == [[]] * 10
    assert "relevant_spans" not in builder.encode_sources(tokenizer, {"source": pairs["source"]}, max_length=512)
    with pytest.raises(ConfigError, match="data.pair_builder.query_relevance must be one of"):
        RecallSetPairs(query_relevance="sometimes")
