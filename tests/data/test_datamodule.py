"""The data module: file formats, column mapping, split carving, truncation and padding (bad input: reliability)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from tests.conftest import write_jsonl
from weaver.data import GivenTokenizer, Seq2SeqDataModule, TrainedTokenizer
from weaver.errors import ConfigError

PAIRS = [
    {"en": f"the package number {i} provides tools", "de": f"das Paket Nummer {i} bietet Werkzeuge"} for i in range(60)
]


def datamodule(tmp_path: Path, **kwargs) -> Seq2SeqDataModule:
    options = {"source_field": "en", "target_field": "de", "cache_dir": str(tmp_path / "cache")}
    options.update(kwargs)
    return Seq2SeqDataModule(TrainedTokenizer(vocab_size=300, min_frequency=1), **options)


def test_nested_fields_are_mapped(tmp_path: Path) -> None:
    rows = [{"translation": {"en": p["en"], "de": p["de"]}} for p in PAIRS]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    pairs = datamodule(
        tmp_path, train_file=str(train), source_field="translation.en", target_field="translation.de"
    ).pairs()
    example = pairs["train"][0]
    assert example["source"].startswith("the package") and example["target"].startswith("das Paket")


def test_missing_splits_are_carved_from_train_reproducibly(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", PAIRS)
    first = datamodule(tmp_path, train_file=str(train), validation_fraction=0.1, test_fraction=0.1).pairs()
    second = datamodule(tmp_path, train_file=str(train), validation_fraction=0.1, test_fraction=0.1).pairs()
    assert len(first["validation"]) == 6 and len(first["test"]) == 6 and len(first["train"]) == 48
    assert first["test"]["source"] == second["test"]["source"]
    assert not set(first["test"]["source"]) & set(first["train"]["source"])


def test_evaluation_examples_that_are_also_train_examples_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", PAIRS[:10] * 6)  # every row six times
    with caplog.at_level(logging.WARNING):
        pairs = datamodule(tmp_path, train_file=str(train), validation_fraction=0.1, test_fraction=0.1).pairs()
    for split in ("validation", "test"):
        assert f"{split} split: {len(pairs[split])} of {len(pairs[split])} examples are also train" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        datamodule(tmp_path, train_file=str(write_jsonl(tmp_path / "once.jsonl", PAIRS)), test_fraction=0.1).pairs()
    assert "also train examples" not in caplog.text


def test_a_test_file_alone_replaces_that_split_of_the_data_dir(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for split, rows in (("train", PAIRS[:40]), ("validation", PAIRS[40:50]), ("test", PAIRS[50:])):
        write_jsonl(folder / f"{split}.jsonl", rows)
    mine = write_jsonl(tmp_path / "mine.jsonl", [{"en": "my own test", "de": "mein eigener Test"}])
    pairs = datamodule(tmp_path, data_dir=str(folder), test_file=str(mine)).pairs()
    assert pairs["test"]["source"] == ["my own test"]
    assert (len(pairs["train"]), len(pairs["validation"])) == (40, 10)
    with pytest.raises(ConfigError, match="data.train_file is required when data.validation_file or data.test_file"):
        datamodule(tmp_path, test_file=str(mine)).pairs()


def test_a_train_fraction_keeps_a_seeded_nested_subset_and_whole_evaluation_splits(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", PAIRS)
    carve = {"train_file": str(train), "validation_fraction": 0.1, "test_fraction": 0.1}
    whole = datamodule(tmp_path, **carve).pairs()
    tenth = datamodule(tmp_path, **carve, train_fraction=0.1).pairs()
    half = datamodule(tmp_path, **carve, train_fraction=0.5).pairs()
    assert (len(tenth["train"]), len(half["train"]), len(whole["train"])) == (5, 24, 48)
    assert set(tenth["train"]["source"]) < set(half["train"]["source"]) < set(whole["train"]["source"])
    assert tenth["test"]["source"] == whole["test"]["source"]
    assert tenth["train"]["source"] == datamodule(tmp_path, **carve, train_fraction=0.1).pairs()["train"]["source"]
    with pytest.raises(ConfigError, match="data.train_fraction"):
        datamodule(tmp_path, **carve, train_fraction=0).pairs()
    given = {"train_file": str(train), "validation_file": str(train), "test_file": str(train)}  # no split carved
    assert len(datamodule(tmp_path, **given, train_fraction=0.1).pairs()["train"]) == 6


def test_evaluation_reads_only_the_split_it_scores_where_that_has_a_file(tmp_path: Path) -> None:
    """eval.py data.test_file=...: the run's train file may be gone."""
    trained = datamodule(tmp_path, train_file=str(write_jsonl(tmp_path / "train.jsonl", PAIRS))).tokenizer
    test = write_jsonl(tmp_path / "test.jsonl", PAIRS[:3])
    data = Seq2SeqDataModule(
        GivenTokenizer(trained),
        source_field="en",
        target_field="de",
        train_file=str(tmp_path / "gone.jsonl"),
        test_file=str(test),
        cache_dir=str(tmp_path / "cache"),
        splits=["test"],
    )
    assert list(data.tokenized_splits()) == ["test"] and len(data.pairs()["test"]) == 3


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".json"])
def test_other_file_formats_load(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"train{suffix}"
    if suffix == ".parquet":
        import pandas as pd

        pd.DataFrame(PAIRS).to_parquet(path)
    elif suffix == ".json":
        import json

        path.write_text(json.dumps(PAIRS))
    else:
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["en", "de"], delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(PAIRS)
    pairs = datamodule(tmp_path, train_file=str(path)).pairs()
    assert sum(len(pairs[s]) for s in pairs) == len(PAIRS)


def test_non_positive_lengths_are_rejected() -> None:
    with pytest.raises(ConfigError, match="data.max_source_length must be a positive integer, got 0"):
        Seq2SeqDataModule(TrainedTokenizer(), source_field="en", target_field="de", max_source_length=0)


def test_batches_are_padded_to_their_longest_example_and_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = PAIRS[:40] + [{"en": " ".join(["word"] * 200), "de": "kurz"}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = datamodule(tmp_path, train_file=str(train), max_source_length=16, batch_size=8)
    with caplog.at_level(logging.INFO):
        dm.prepare_data()
        dm.setup("fit")
        dm.prepare_data()  # as trainer.test after trainer.fit does
    truncations = [m for m in caplog.messages if "sources truncated to max_source_length=16" in m]
    assert len(truncations) == 3 == len({m.split(":")[0] for m in truncations}), "once per split"
    lengths = [len(ids) for split in ("train", "validation", "test") for ids in dm.datasets[split]["input_ids"]]
    assert max(lengths) == 16
    batch = next(iter(dm.dataloader("train", shuffle=False)))
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    widths = batch["attention_mask"].sum(dim=1)
    assert batch["input_ids"].size(1) == int(widths.max())
    assert (batch["labels"][batch["labels"] != -100] >= 0).all()


def test_tokenized_splits_are_reused_from_the_cache(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", PAIRS)
    first = datamodule(tmp_path, train_file=str(train)).tokenized_splits()
    second = datamodule(tmp_path, train_file=str(train)).tokenized_splits()
    assert first["train"]._fingerprint == second["train"]._fingerprint
    assert first["train"].cache_files == second["train"].cache_files


def test_evaluation_replicas_of_a_sharded_model_take_equal_numbers_of_batches(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", PAIRS)
    dm = datamodule(tmp_path, train_file=str(train), eval_batch_size=5, test_fraction=0.35)
    dm.setup("test")  # 21 test examples: 5 batches over 3 replicas

    def batch_counts() -> list[int]:
        return [len(dm.batch_sampler("test", shuffle=False, num_replicas=3, rank=rank)) for rank in range(3)]

    assert batch_counts() == [2, 2, 1]  # unsharded: every example once
    dm.trainer = SimpleNamespace(strategy=FSDPStrategy())  # FSDP: every rank runs each forward together
    assert batch_counts() == [2, 2, 2]


def test_the_lowest_ids_read_are_those_of_the_batches_every_rank_reads(tmp_path: Path) -> None:
    """What validation generates for when `limit_val_batches` cuts it short: the lowest example ids among the
    examples the ranks read, not the split's lowest ids, which length-sorted batches spread over all of it."""
    rows = [{"en": "word " * (1 + i % 9) + str(i), "de": f"Wort {i}"} for i in range(60)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = datamodule(tmp_path, train_file=str(train), eval_max_tokens=40, validation_fraction=0.5)
    dm.setup("fit")
    ids = dm.datasets["validation"]["example_id"]
    dm.trainer = SimpleNamespace(world_size=2, strategy=None)
    read = [
        ids[i] for rank in range(2) for batch in list(dm.batch_sampler("validation", False, 2, rank))[:2] for i in batch
    ]
    chosen = dm.lowest_ids_read("validation", 5, batches_per_rank=2)
    assert chosen == set(sorted(read)[:5])
    assert chosen != set(sorted(ids)[:5])  # the split's five lowest are not all among the examples read
    assert dm.lowest_ids_read("validation", 5, batches_per_rank=float("inf")) == set(sorted(ids)[:5])


def test_opening_an_epoch_of_training_batches_leaves_the_global_generator_alone(tmp_path: Path) -> None:
    """Dropout draws from the global generator: an epoch's loader must not, or a run resumed at an epoch's end
    (which restores the generator after opening the next epoch) would draw other dropout masks."""
    dm = datamodule(tmp_path, train_file=str(write_jsonl(tmp_path / "train.jsonl", PAIRS)), batch_size=8)
    dm.setup("fit")
    before = torch.get_rng_state()
    next(iter(dm.train_dataloader()))
    assert torch.equal(torch.get_rng_state(), before)
