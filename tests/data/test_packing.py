"""Packing for decoder-only training: whole examples in rows within their length, the same count every epoch, and
rows laid out so that each example is scored as it would be alone."""

from __future__ import annotations

import numpy as np
import pytest

from weaver.data import Seq2SeqDataModule
from weaver.data.collate import LABEL_PAD
from weaver.data.packing import PackedBatchSampler, PackedCollator
from weaver.errors import ConfigError


def test_rows_hold_whole_examples_within_their_length_and_each_example_once_an_epoch() -> None:
    lengths = np.random.default_rng(0).integers(5, 120, size=400)
    sampler = PackedBatchSampler(lengths, row_length=128, rows_per_batch=4, seed=3)
    epochs = [sampler.all_batches(epoch) for epoch in range(3)]
    for batches in epochs:
        rows = [row for batch in batches for row in batch]
        assert all(len(batch) <= 4 for batch in batches) and len(batches) == len(sampler)
        assert all(lengths[row].sum() <= 128 for row in rows)
        assert sorted(index for row in rows for index in row) == list(range(400))
    assert epochs[0] != epochs[1]
    assert sampler.row_efficiency() > 0.95


def test_the_collator_lays_out_prompts_completions_positions_and_documents() -> None:
    row = [{"input_ids": [11, 12], "labels": [21, 2]}, {"input_ids": [13], "labels": [2]}]
    batch = PackedCollator(pad_token_id=0)([row, [row[1]]])
    assert batch["input_ids"].tolist() == [[11, 12, 21, 2, 13, 2], [13, 2, 0, 0, 0, 0]]
    ignored = LABEL_PAD
    assert batch["labels"].tolist() == [[ignored, 21, 2, ignored, 2, ignored], [2] + [ignored] * 5]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 0, 0, 0, 0]]
    assert batch["document_ids"].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, -1, -1, -1, -1]]
    assert batch["attention_mask"].sum().item() == 8


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_tokens": 4000}, "data.packing=true packs prompts and completions of a decoder-only model"),
        ({"prompt_template": "{source}"}, "data.packing=true fills batches of data.max_tokens tokens"),
    ],
    ids=["encoder-decoder", "no-token-budget"],
)
def test_packing_needs_a_decoder_only_model_and_a_token_budget(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Seq2SeqDataModule(None, source_field="en", target_field="de", packing=True, **settings)
