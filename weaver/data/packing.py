"""Packing for decoder-only training (`data.packing=true`): several (prompt, completion) examples share a row.

A padded batch wastes the columns between each example and the batch's longest; packing fills a row of
`row_length` tokens with whole examples instead, so almost every column is a real token. Each example keeps to
itself: the collator gives every token its example's number (`document_ids`, the model's block-diagonal causal mask)
and its position inside the example (`position_ids`), and labels only the completion tokens, so the loss of a packed
row is the sum of its examples' unpacked losses. Evaluation and generation stay unpacked.

Rows are formed per epoch by first-fit decreasing over the lengths, ties broken by a shuffle seeded with
(seed, epoch); consecutive rows make a batch of `max_tokens // row_length` rows, and the batch order is shuffled per
(seed, epoch). First-fit decreasing depends only on the sorted lengths, so the number of rows, and of batches, is
the same every epoch, as resuming mid-epoch needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import Sampler

from weaver.data.batching import EpochBatchSampler, positive_int
from weaver.data.collate import LABEL_PAD, Seq2SeqCollator

# A batch of packed rows: each row the indices of the examples it holds.
Rows = list[list[int]]


def first_fit_decreasing(lengths: np.ndarray, order: np.ndarray, row_length: int) -> Rows:
    """Rows of at most `row_length` tokens: examples, longest first (ties in `order`), each into the first row with
    room for it. An example longer than a row gets a row of its own."""
    ranked = order[np.argsort(-lengths[order], kind="stable")]
    rows: Rows = []
    room = np.empty(len(ranked), dtype=np.int64)
    for index in ranked.tolist():
        length = int(lengths[index])
        fits = np.flatnonzero(room[: len(rows)] >= length)
        if fits.size:
            rows[fits[0]].append(index)
            room[fits[0]] -= length
        else:
            rows.append([index])
            room[len(rows) - 1] = row_length - length
    return rows


class PackedBatchSampler(EpochBatchSampler):
    """Batches of `rows_per_batch` packed rows of at most `row_length` tokens (`lengths` per example: prompt and
    completion together), the same number every epoch; see the module's docstring."""

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        row_length: int,
        rows_per_batch: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: Sampler | None = None,
        even: bool = True,
    ) -> None:
        super().__init__(shuffle, seed, num_replicas, rank, sampler, even)
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.row_length = positive_int("row_length", row_length)
        self.rows_per_batch = positive_int("rows_per_batch", rows_per_batch)
        rows = len(first_fit_decreasing(self.lengths, np.arange(len(self.lengths)), row_length))
        self.total_batches = -(-rows // rows_per_batch)

    def all_batches(self, epoch: int | None = None) -> list[Rows]:
        count = len(self.lengths)
        rng = self.rng(epoch) if self.shuffle else None
        order = rng.permutation(count) if rng is not None else np.arange(count)
        rows = first_fit_decreasing(self.lengths, order, self.row_length)
        batches = [rows[start : start + self.rows_per_batch] for start in range(0, len(rows), self.rows_per_batch)]
        batch_order = rng.permutation(len(batches)) if rng is not None else range(len(batches))
        return [batches[b] for b in batch_order]

    def row_efficiency(self, epoch: int | None = None) -> float:
        """Real / padded tokens of every replica's batches, each batch padded to its longest row."""
        real = padded = 0
        for batch in self.all_batches(epoch):
            filled = [int(self.lengths[row].sum()) for row in batch]
            real, padded = real + sum(filled), padded + len(filled) * max(filled)
        return real / padded if padded else 1.0


class PackedRows(torch.utils.data.Dataset):
    """`dataset` read a row at a time: what a DataLoader fetches for a batch of `PackedBatchSampler`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, row: list[int]) -> list[dict[str, Any]]:
        return [self.dataset[index] for index in row]


class PackedCollator:
    """A batch of rows, each the prompts and completions of its examples one after the other, padded on the right:
    `input_ids`, `attention_mask` (real tokens), `labels` (the next token where it is a completion token, else
    ignored), `position_ids` (from 0 in each example) and `document_ids` (the example's number in its row; -1 for
    padding, which attends only to padding)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        columns: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": [], "document_ids": []}
        for row in rows:
            packed = {name: [] for name in columns}
            for number, example in enumerate(row):
                prompt, completion = list(example["input_ids"]), list(example["labels"])
                length = len(prompt) + len(completion)
                packed["input_ids"] += prompt + completion
                # Position t predicts token t + 1: the prompt's last token the first completion token, and so on.
                packed["labels"] += [LABEL_PAD] * (len(prompt) - 1) + completion + [LABEL_PAD]
                packed["position_ids"] += list(range(length))
                packed["document_ids"] += [number] * length
            for name, values in packed.items():
                columns[name].append(values)
        pads = {"input_ids": self.pad_token_id, "labels": LABEL_PAD, "position_ids": 0, "document_ids": -1}
        batch = {name: Seq2SeqCollator.pad(values, pads[name]) for name, values in columns.items()}
        batch["attention_mask"] = batch["document_ids"].ge(0)
        return batch
