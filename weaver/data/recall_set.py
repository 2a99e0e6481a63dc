"""The recall set: long inputs that need recall by construction.

From rows of (key, document, summary), such as Debian packages' (name, description, synopsis), each example's
source is a query (one row's key) followed by `num_documents` documents, each headed by its own key, the queried
one among them at a random place; the target is the queried document's summary. Only by finding the document
headed by the queried key can a model write the right summary, wherever it sits in an input of any length: with
100-token documents, 10 of them make a ~1k-token source and 640 a ~64k-token one.

`RecallSetPairs` is the data module's `pair_builder` for such rows. Documents are drawn from the example's own
split (splits stay apart), every draw seeded by (seed, split, example), so the same settings give the same
examples. The query ends with `query_token`, which `memory.prefix_token` can name so every encoder window starts
with the query.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from weaver.data.columns import check_columns, get_field, skip_reason
from weaver.data.datamodule import ColumnPairs
from weaver.errors import ConfigError, DataError, require_positive_int

log = logging.getLogger(__name__)

QUERY_RELEVANCE = ("ignored", "relevant", "irrelevant")  # `query_relevance`: where the query's tokens go
# Bump when the examples built from the same rows change, so cached datasets are not reused.
PAIRS_VERSION = "2"  # 2: `example_id` is the queried row's index in the input, as for every other builder


@dataclass
class RecallSetPairs:
    """Rows of (key, document, summary) -> (query + `num_documents` keyed documents, the queried one's summary).

    `num_documents` sets the training examples' length, `eval_num_documents` (default: the same) the validation
    and test ones', so a model can train on short inputs and be scored on long ones. With `min_documents`, each
    training example draws its count uniformly from `min_documents` to `num_documents`: examples of one document
    teach summarizing it directly, longer ones finding it. With `rename_rate`, that fraction of training examples
    heads its documents with keys drawn at random from the split (the query names the queried document's new key),
    so its summary cannot be guessed from the query's words and only finding the document earns it; validation and
    test keep the true keys. Every usable training row is queried once; `eval_max_examples` caps how many validation
    and test rows are (the first ones; predict.py's input rows are all queried). Keys come from `key_field`, or, in
    rows without one, from `keys_file` (JSON, optionally gzipped: {row id: key}) joined on `id_field`. Rows without
    a usable key, document or summary are skipped and counted.
    """

    num_documents: int = 16
    eval_num_documents: int | None = None
    min_documents: int | None = None
    eval_max_examples: int | None = None
    key_field: str = "name"
    document_field: str = "document"
    summary_field: str = "summary"
    keys_file: str | None = None
    id_field: str = "id"
    query_token: str = "<query>"
    document_token: str = "<doc>"
    seed: int = 0
    # The query's tokens in `task.relevance_loss_weight`'s loss: "ignored" (the loss asks that, of the attention on
    # the documents, most be on the queried one, and leaves attention on the query free), "relevant" (beside the
    # queried document's: satisfied by attending to the query alone) or "irrelevant" (pulls attention off it).
    query_relevance: str = "ignored"
    rename_rate: float = 0.0

    def __post_init__(self) -> None:
        require_positive_int("data.pair_builder.num_documents", self.num_documents)  # the one with no null
        for name in ("eval_num_documents", "min_documents", "eval_max_examples"):
            if getattr(self, name) is not None:
                require_positive_int(f"data.pair_builder.{name}", getattr(self, name))
        if (
            isinstance(self.rename_rate, bool)
            or not isinstance(self.rename_rate, int | float)
            or not (0 <= self.rename_rate <= 1)
        ):
            raise ConfigError(f"data.pair_builder.rename_rate must be a number from 0 to 1, got {self.rename_rate!r}")
        if self.query_relevance not in QUERY_RELEVANCE:
            raise ConfigError(
                f"data.pair_builder.query_relevance must be one of {list(QUERY_RELEVANCE)}, "
                f"got {self.query_relevance!r}"
            )
        if self.min_documents is not None and self.min_documents > self.num_documents:
            raise ConfigError(
                f"data.pair_builder.min_documents={self.min_documents} exceeds num_documents={self.num_documents}"
            )

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return (self.query_token, self.document_token)

    def documents_per_example(self, split: str) -> int:
        return self.num_documents if split == "train" else (self.eval_num_documents or self.num_documents)

    def build_pairs(self, dataset: Dataset, split: str) -> Dataset:
        """Columns `example_id` (the queried row's index in `dataset`), `source`, `target` and `position` (where the
        queried document sits, 0-based)."""
        keys, documents, summaries, rows = self.usable_rows(dataset, split)
        capped = split in ("validation", "test") and self.eval_max_examples  # not predict.py's input: every row
        count = min(len(rows), self.eval_max_examples) if capped else len(rows)
        per_example = self.documents_per_example(split)
        if per_example > len(rows):
            key = "num_documents" if split == "train" else "eval_num_documents"
            raise DataError(
                f"data.pair_builder.{key}={per_example} exceeds the {len(rows)} usable rows of the {split} split"
            )
        queried = {row: position for position, row in enumerate(rows[:count])}
        split_code = zlib.crc32(split.encode())

        def examples(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            built: dict[str, list[Any]] = {"example_id": [], "source": [], "target": [], "position": []}
            for index in indices:
                if index not in queried:
                    continue
                target = queried[index]
                rng = np.random.default_rng([self.seed, split_code, target])
                count = per_example
                if split == "train" and self.min_documents is not None:
                    count = int(
                        np.random.default_rng([self.seed, split_code, target, 1]).integers(
                            self.min_documents, per_example + 1
                        )
                    )
                others = rng.choice(len(rows) - 1, size=count - 1, replace=False)
                others = others + (others >= target)  # every row but the queried one
                position = int(rng.integers(count))
                order = [*others[:position].tolist(), target, *others[position:].tolist()]
                headers = [keys[i] for i in order]
                if split == "train" and self.rename_rate:
                    renaming = np.random.default_rng([self.seed, split_code, target, 2])
                    if renaming.random() < self.rename_rate:
                        headers = [keys[i] for i in renaming.choice(len(rows), size=count, replace=False)]
                body = " ".join(
                    f"{self.document_token} {key}: {documents[i]}" for key, i in zip(headers, order, strict=True)
                )
                built["example_id"].append(index)
                built["source"].append(f"{headers[position]} {self.query_token} {body}")
                built["target"].append(summaries[target])
                built["position"].append(position)
            return built

        fingerprint = hashlib.sha256(f"{dataset._fingerprint}|{self!r}|{split}|{PAIRS_VERSION}".encode()).hexdigest()
        pairs = dataset.map(
            examples,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            new_fingerprint=fingerprint[:16],
            desc=f"Building {split} recall examples",
        )
        counts = f"{self.min_documents} to {per_example}" if split == "train" and self.min_documents else per_example
        log.info(
            "%s split: %d recall examples of %s documents each, drawn from %d rows.",
            split,
            len(pairs),
            counts,
            len(rows),
        )
        return pairs

    def usable_rows(self, dataset: Dataset, split: str) -> tuple[list[str], list[str], list[str], list[int]]:
        """Keys, documents and summaries of the usable rows (by position among them), and their row indices."""
        fields = {"document_field": self.document_field, "summary_field": self.summary_field}
        keyed = not self.keys_file or self.key_field.split(".")[0] in dataset.column_names
        fields["key_field" if keyed else "id_field"] = self.key_field if keyed else self.id_field
        check_columns(dataset, split, {f"pair_builder.{option}": name for option, name in fields.items()})
        lookup = read_keys(self.keys_file) if self.keys_file else None
        keys, documents, summaries, rows = [], [], [], []
        skipped: Counter[str] = Counter()
        for index, row in enumerate(dataset):
            key = get_field(row, self.key_field)
            if skip_reason(key) and lookup is not None:
                key = lookup.get(str(get_field(row, self.id_field)))
            values = {
                "key": key,
                "document": get_field(row, self.document_field),
                "summary": get_field(row, self.summary_field),
            }
            reason = next(
                (f"{name} {skip_reason(value)}" for name, value in values.items() if skip_reason(value)), None
            )
            if reason:
                skipped[reason] += 1
                continue
            keys.append(" ".join(values["key"].split()))
            documents.append(" ".join(values["document"].split()))
            summaries.append(values["summary"].strip())
            rows.append(index)
        if skipped:
            details = ", ".join(f"{count} {reason}" for reason, count in skipped.most_common())
            log.warning("%s split: skipped %d of %d rows (%s).", split, sum(skipped.values()), len(dataset), details)
        if not rows:
            raise DataError(f"The {split} split has no rows with a key, a document and a summary.")
        return keys, documents, summaries, rows

    def encode_sources(
        self, tokenizer: PreTrainedTokenizerBase, batch: dict[str, list[Any]], max_length: int, prefix: str = ""
    ) -> dict[str, list[Any]]:
        """Sources cut on the right, as for any column pair (past max_source_length, documents are dropped), and
        which tokens a synopsis draws on, as [start, end) pairs (`task.relevance_loss_weight` trains cross-attention
        towards them): `relevant_spans`, the queried document's, from its `document_token` to the next one (empty
        where truncation dropped it), and `ignored_spans`, tokens the loss leaves out; the query goes where
        `query_relevance` says."""
        encoded = ColumnPairs.encode_sources(self, tokenizer, batch, max_length, prefix)
        if "position" not in batch:  # sources given to predict or explain: nothing known about them
            return encoded
        marker = tokenizer.convert_tokens_to_ids(self.document_token)
        relevant, ignored = [], []
        for ids, position in zip(encoded["input_ids"], batch["position"], strict=True):
            starts = [index for index, token in enumerate(ids) if token == marker] + [len(ids)]
            queried = starts[position : position + 2] if position + 1 < len(starts) else [0, 0]
            query = [0, starts[0]]
            relevant.append([queried, query] if self.query_relevance == "relevant" else [queried])
            ignored.append([query] if self.query_relevance == "ignored" else [])
        return {**encoded, "relevant_spans": relevant, "ignored_spans": ignored}


def read_keys(path: str) -> dict[str, str]:
    """{row id: key} from a JSON object file, gzipped or not."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.pair_builder.keys_file='{path}' does not exist.")
    opener = gzip.open if file.suffix == ".gz" else open
    with opener(file, "rt", encoding="utf-8") as handle:
        keys = json.load(handle)
    if not isinstance(keys, dict):
        raise DataError(f"data.pair_builder.keys_file='{path}' must hold a JSON object {{row id: key}}.")
    return keys
