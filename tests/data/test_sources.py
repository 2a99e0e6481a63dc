"""Loading raw splits from the user's own files: what is read, and from which file (bad input: reliability)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from weaver.data import Seq2SeqDataModule, TrainedTokenizer
from weaver.data.sources import load_file
from weaver.errors import DataError

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


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_cells_that_look_like_numbers_or_booleans_are_text_as_written(tmp_path: Path, suffix: str) -> None:
    sep = "\t" if suffix == ".tsv" else ","
    # A column numeric for pandas' first chunk of rows and text after it, too.
    codes = [f"{i:03d}" for i in range(10_005)] + ["1.50", "True", "x1"]
    path = tmp_path / f"train{suffix}"
    path.write_text("\n".join([f"code{sep}de", *(f"{code}{sep}{code}" for code in codes)]) + "\n")
    dataset = load_file("train", str(path), str(tmp_path / "cache"))
    assert dataset["code"] == codes and dataset["de"] == codes


def test_a_tsv_cell_is_text_as_written_quotes_and_all(tmp_path: Path) -> None:
    rows = ['"Hello there\tHALLO', "plain\tschlicht", 'size 12"\tGROESSE 12 ZOLL', '"quoted"\t"zitiert"']
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(["en\tde", *rows]) + "\n")
    dataset = load_file("train", str(path), str(tmp_path / "cache"))
    assert dataset["en"] == ['"Hello there', "plain", 'size 12"', '"quoted"']
    assert dataset["de"] == ["HALLO", "schlicht", "GROESSE 12 ZOLL", '"zitiert"']


@pytest.mark.parametrize(
    ("text", "line"), [('en,de\na,b\n"Hello," she said,HALLO\nc,d\n', 3), ('en,de\na,b\nc,d\n"open,e\nf,g\n', 4)]
)
def test_a_csv_row_that_does_not_parse_is_named_by_its_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "train.csv"
    path.write_text(text)
    with pytest.raises(
        DataError, match=rf"^data.train_file: cannot read '{path}' as csv: .*\(the row starting on line {line}\)$"
    ):
        load_file("train", str(path), str(tmp_path / "cache"))


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
