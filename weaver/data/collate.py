"""Dynamic padding: each batch is padded to its own longest example, not to a global maximum."""

from __future__ import annotations

from typing import Any

import torch

LABEL_PAD = -100  # ignored by cross-entropy


class Seq2SeqCollator:
    """`left_pad_sources`: decoder-only models read prompts padded on the left, so that every completion follows
    its prompt directly, in training and in generation alike."""

    def __init__(self, pad_token_id: int, left_pad_sources: bool = False) -> None:
        self.pad_token_id, self.left_pad_sources = pad_token_id, left_pad_sources

    @staticmethod
    def pad(sequences: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
        width = max(len(sequence) for sequence in sequences)
        out = torch.full((len(sequences), width), value, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            columns = slice(width - len(sequence), width) if left else slice(0, len(sequence))
            out[row, columns] = torch.tensor(sequence, dtype=torch.long)
        return out

    def sources(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded source ids and their attention mask, which comes from the lengths: a pad id may also be a real
        token of a prompt (GPT-2 and Llama pad with EOS, which a chat template may put between turns)."""
        mask = self.pad([[1] * len(sequence) for sequence in sequences], 0, left=self.left_pad_sources)
        return self.pad(sequences, self.pad_token_id, left=self.left_pad_sources), mask.bool()

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        input_ids, attention_mask = self.sources([e["input_ids"] for e in examples])
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": self.pad([e["labels"] for e in examples], LABEL_PAD),
            "example_id": torch.tensor([e["example_id"] for e in examples], dtype=torch.long),
            # Raw text travels with the batch: metrics score against the original references.
            "source": [e["source"] for e in examples],
            "target": [e["target"] for e in examples],
        }
        if "relevant_spans" in examples[0]:  # pair builders that know where each target comes from (the recall set)
            width = input_ids.size(1)
            batch["relevance_mask"] = self.span_mask([e["relevant_spans"] for e in examples], width)
            batch["relevance_ignore_mask"] = self.span_mask([e["ignored_spans"] for e in examples], width)
        return batch

    @staticmethod
    def span_mask(spans: list[list[list[int]]], width: int) -> torch.Tensor:
        """(B, S) True inside any of each source's [start, end) spans (sources padded on the right)."""
        mask = torch.zeros(len(spans), width, dtype=torch.bool)
        for row, pairs in enumerate(spans):
            for start, end in pairs:
                mask[row, start:end] = True
        return mask
