"""Unlabelled text as examples for self-supervised objectives (`task=pretrain`).

`RawText` is the data module's `pair_builder` for rows of plain text: a `.txt` file (one row per paragraph), a
column of jsonl/csv/parquet rows, a `datasets` source, or the text sides of the embedded corpora. Each text becomes
examples whose source and target are both the text; `data.denoising` then corrupts every split's sources in token
space: with no labelled pairs to add them beside, the corrupted texts are the examples. Texts longer than
`max_words` words are split into pieces of at most that many, so a long document is read whole instead of cut at
`data.max_source_length`.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from weaver.data.columns import check_columns, get_field, skip_reason
from weaver.data.datamodule import ColumnPairs
from weaver.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Bump when the examples built from the same rows change, so cached datasets are not reused.
PIECES_VERSION = "1"


@dataclass
class RawText:
    """Rows -> pieces of text, each the source and the target of one example. Every non-empty text of each of
    `text_fields` (dotted names reach into nested fields) counts; rows where it is missing, empty or not text are
    skipped and counted, as are pieces of fewer than `min_words` words."""

    # No labels: the data module makes every split's examples `data.denoising`'s corrupted texts.
    unlabelled = True

    text_fields: list[str] = field(default_factory=lambda: ["text"])
    max_words: int = 200
    min_words: int = 3

    def __post_init__(self) -> None:
        self.text_fields = [self.text_fields] if isinstance(self.text_fields, str) else list(self.text_fields)
        if not self.text_fields:
            raise ConfigError("data.pair_builder.text_fields names no column: give at least one, e.g. [text].")
        for name in ("max_words", "min_words"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.pair_builder.{name} must be a positive integer, got {value!r}")

    def pieces(self, text: str) -> list[str]:
        words = text.split()
        return [" ".join(words[start : start + self.max_words]) for start in range(0, len(words), self.max_words)]

    def fields_of(self, dataset: Dataset, split: str) -> list[str]:
        """`text_fields`; a `.txt` file's one column, `text`, where it has none of them (so a text file replaces
        the default corpus, whose fields are `document` and `summary`, without naming its column)."""
        if dataset.column_names == ["text"] and "text" not in self.text_fields:
            log.info(
                "%s split: a text file's rows (column 'text'; data.pair_builder.text_fields=%s).",
                split,
                self.text_fields,
            )
            return ["text"]
        for name in self.text_fields:
            check_columns(dataset, split, {"pair_builder.text_fields": name})
        return self.text_fields

    def build_pairs(self, dataset: Dataset, split: str) -> Dataset:
        """Columns `example_id`, `source` and `target` (the same piece of text)."""
        text_fields = self.fields_of(dataset, split)
        skipped: Counter[str] = Counter()

        def examples(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            texts = []
            rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
            for row in rows:
                for name in text_fields:
                    value = get_field(row, name)
                    if reason := skip_reason(value):
                        skipped[f"{name} {reason}"] += 1
                        continue
                    for piece in self.pieces(value):
                        if len(piece.split()) < self.min_words:
                            skipped[f"pieces under min_words={self.min_words}"] += 1
                        else:
                            texts.append(piece)
            return {"source": texts, "target": texts}

        recipe = f"{dataset._fingerprint}|{self!r}|{text_fields}|{split}|{PIECES_VERSION}"
        pieces = dataset.map(
            examples,
            batched=True,
            remove_columns=dataset.column_names,
            new_fingerprint=hashlib.sha256(recipe.encode()).hexdigest()[:16],
            desc=f"Reading {split} texts",
        )
        pieces = pieces.add_column("example_id", list(range(len(pieces))))
        if skipped:  # counted only when the map ran, not when `datasets` read it from its cache
            details = ", ".join(f"{count} {reason}" for reason, count in skipped.most_common())
            log.warning("%s split: skipped %s.", split, details)
        if len(pieces) == 0:
            raise DataError(
                f"The {split} split has no text in {text_fields} (data.pair_builder.text_fields): "
                "check the column names and that the files are not empty."
            )
        log.info("%s split: %d pieces of text of at most %d words.", split, len(pieces), self.max_words)
        return pieces

    encode_sources = ColumnPairs.encode_sources
