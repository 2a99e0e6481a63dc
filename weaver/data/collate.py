"""Dynamic padding: each batch is padded to its own longest example, not to a global maximum."""

from __future__ import annotations

from typing import Any

import torch

LABEL_PAD = -100  # ignored by cross-entropy


class Seq2SeqCollator:
    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    @staticmethod
    def pad(sequences: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(sequence) for sequence in sequences)
        out = torch.full((len(sequences), width), value, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            out[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        return out

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        input_ids = self.pad([e["input_ids"] for e in examples], self.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": input_ids.ne(self.pad_token_id),
            "labels": self.pad([e["labels"] for e in examples], LABEL_PAD),
            "example_id": torch.tensor([e["example_id"] for e in examples], dtype=torch.long),
            # Raw text travels with the batch: metrics score against the original references.
            "source": [e["source"] for e in examples],
            "target": [e["target"] for e in examples],
        }
