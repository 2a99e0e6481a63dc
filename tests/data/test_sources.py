"""Loading raw splits from the user's own files: what is read, and from which file (bad input: reliability)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from weaver.data import Seq2SeqDataModule, TrainedTokenizer
from weaver.data.sources import load_file

# pandas' default NA strings, which are text here.
NA_WORDS = ["None", "NA", "null", "nan", "N/A", "NULL", "#N/A", "n/a", "-nan"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_cells_that_pandas_reads_as_missing_are_text(tmp_path: Path, suffix: str) -> None:
    sep = "\t" if suffix == ".tsv" else ","
    rows = [f"{word}{sep}das Wort {word}" for word in NA_WORDS]
    path = tmp_path / f"train{suffix}"
    path.write_text("\n".join([f"en{sep}de", *rows]) + "\n")
    dataset = load_file("train", str(path), str(tmp_path / "cache"))
    assert dataset["en"] == NA_WORDS


def test_empty_csv_cells_are_counted_as_empty_and_a_short_rows_cells_as_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [f"word {i},Wort {i}" for i in range(40)] + [",leer", "kurz", "null,nichts"]
    path = tmp_path / "train.csv"
    path.write_text("\n".join(["en,de", *rows]) + "\n")
    tokenizer = TrainedTokenizer(vocab_size=300, min_frequency=1)
    module = Seq2SeqDataModule(
        tokenizer, source_field="en", target_field="de", train_file=str(path), cache_dir=str(tmp_path / "cache")
    )
    with caplog.at_level(logging.WARNING):
        pairs = module.pairs()
    assert sum(len(pairs[split]) for split in pairs) == 41
    message = " ".join(caplog.messages)
    assert sum(int(n) for n in re.findall(r"skipped (\d+) of", message)) == 2
    assert "1 en empty" in message and "1 de missing" in message
