"""Generation from a restored checkpoint outside a training loop: batched predictions for inputs, and a chat.

Sources are encoded exactly as in training, by the data config's pair builder: the same source prefix, the same
truncation, and for dialogue the same history formatting (speaker tokens, turn separator, the most recent turns
kept whole).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from datasets import Dataset

from weaver.checkpoints import RestoredRun
from weaver.data.collate import Seq2SeqCollator
from weaver.data.columns import check_columns, select_pairs
from weaver.data.dialogue import DialoguePairs
from weaver.errors import ConfigError
from weaver.explain.attention import reads_a_source, recall_settings
from weaver.instantiate import build_pair_builder
from weaver.prompts import PromptTemplate
from weaver.utils.hardware import compute_dtype

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Example:
    source: str
    reference: str | None = None
    context: list[str] = field(default_factory=list)  # dialogue: formatted history turns, oldest first
    # Where it comes from: the input's row (0-based; a .txt file's line), so rows skipped as empty leave gaps rather
    # than shifting the ids after them; with a pair builder, the example's id among those the rows expand into.
    id: int = 0
    conversation_id: str | None = None  # dialogue: the input conversation's id (or row) the turn belongs to


class Predictor:
    """Generates for lists of `Example`s with a restored run's model, tokenizer and decoding settings."""

    def __init__(self, run: RestoredRun, batch_size: int = 32) -> None:
        self.run, self.batch_size = run, batch_size
        data = run.cfg.data
        self.pair_builder = build_pair_builder(data)
        # Decoder-only models (model=hf_causal_lm) read each source inside the run's prompt template.
        self.prompt = PromptTemplate(data.prompt_template) if data.get("prompt_template") is not None else None
        self.collator = Seq2SeqCollator(run.tokenizer.pad_token_id, left_pad_sources=self.prompt is not None)
        self.device = next(run.task.parameters()).device

    @property
    def is_dialogue(self) -> bool:
        return isinstance(self.pair_builder, DialoguePairs)

    def examples_from(self, dataset: Dataset, last_turn: bool = False) -> list[Example]:
        """Rows of an input file as examples: a run with a pair builder makes them as in training (conversations
        expand into (history, next turn) pairs, recall-set rows into queries over keyed documents); other rows give
        their source field, and their target field as the reference where the row has one. With `last_turn`
        (dialogue), each conversation gives one example without a reference: the reply to its last turn."""
        if self.run.cfg.data.get("pair_builder"):  # rows become examples as in training: conversations, recall sets
            only_dialogue = {"last_turn": True} if last_turn else {}  # the recall set's builder has no such mode
            pairs = self.pair_builder.build_pairs(dataset, "input", **only_dialogue)
            return [
                Example(
                    row["source"],
                    None if last_turn else row["target"],
                    row.get("context") or [],
                    row["example_id"],
                    row.get("conversation_id"),
                )
                for row in pairs
            ]
        source_field, target_field = self.run.cfg.data.source_field, self.run.cfg.data.target_field
        check_columns(dataset, "input", {"source_field": source_field})
        has_references = target_field.split(".")[0] in dataset.column_names
        references = target_field if has_references else None
        pairs = select_pairs(dataset, "input", source_field, references, target_required=False)
        return [Example(row["source"], row["target"] or None, id=row["example_id"]) for row in pairs]

    def encode(self, examples: list[Example]) -> dict[str, Any]:
        """Padded ids on the model's device, and for each example whether its source was cut to fit."""
        columns: dict[str, list[Any]] = {
            "source": [e.source for e in examples],
            "context": [e.context for e in examples],
        }
        data = self.run.cfg.data
        encoded = self.pair_builder.encode_sources(
            self.run.tokenizer, columns, data.max_source_length, data.get("source_prefix", "")
        )
        if self.prompt is not None:
            encoded["input_ids"] = self.prompt.prompts(
                self.run.tokenizer, encoded, self.pair_builder, data.max_source_length
            )
        input_ids, attention_mask = self.collator.sources(encoded["input_ids"])
        return {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            "source_truncated": encoded["source_truncated"],
        }

    def generate(self, examples: list[Example]) -> Iterator[str]:
        """Hypotheses in input order."""
        return iter(self.map_batches(examples, self.run.task.generate_texts))

    def map_batches(self, examples: list[Example], function: Callable[[dict[str, torch.Tensor]], list[T]]) -> list[T]:
        """``function`` on the encoded examples, `batch_size` at a time (longest first, so batches pad little), in
        the run's own precision (bf16 autocast for bf16-mixed, as its validation and test generated); one result
        per example, in input order."""
        order = sorted(range(len(examples)), key=lambda i: -len(examples[i].source))
        results: dict[int, T] = {}
        dtype = compute_dtype(self.run.cfg.trainer.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                batch = self.encode([examples[i] for i in chunk])
                for index, truncated in zip(chunk, batch.pop("source_truncated"), strict=True):
                    if truncated:
                        log.warning(
                            "Input %d (the id of its prediction) is longer than data.max_source_length=%d tokens "
                            "and is cut to fit, as in training: split it, or give this command a larger "
                            "data.max_source_length%s.",
                            examples[index].id,
                            self.run.cfg.data.max_source_length,
                            self.memory_hint(),
                        )
                results.update(zip(chunk, function(batch), strict=True))
        return [results[i] for i in range(len(examples))]

    def memory_hint(self) -> str:
        """An encoder-decoder without memory could read the whole input with it; a decoder-only model cannot."""
        if recall_settings(self.run.task.model) is not None or not reads_a_source(self.run.task.model):
            return ""
        return " with memory=recall (which reads any length)"

    def topic_context(self, topic: Any) -> list[str]:
        """The formatted topic that starts every context, as in training; `[]` for no topic."""
        if topic is None or topic == "":
            return []
        if not getattr(self.pair_builder, "topic_field", None):
            raise ConfigError("topic= needs a dialogue checkpoint trained with topics (data.pair_builder.topic_field).")
        return self.pair_builder.format_topic(str(topic))

    def reply(self, history: list[str], topic_context: Sequence[str] = ()) -> str:
        """The model's next turn after `history` (formatted turns, oldest first), after `topic_context`."""
        builder = self.pair_builder
        kept = builder.max_history_turns or len(history)  # None: the whole conversation
        context = [*topic_context, *history[max(0, len(history) - kept) :]]
        return next(self.generate([Example(source=builder.turn_separator.join(context), context=context)]))

    def example(self, text: str, id: int = 0) -> Example:
        """One raw input: a source, or for dialogue a one-turn history."""
        text = text.strip()
        if self.is_dialogue:
            return Example(source=self.format_turn(0, text), context=[self.format_turn(0, text)], id=id)
        return Example(source=text, id=id)

    def format_turn(self, speaker: int, text: str) -> str:
        """A typed turn as training formats one: the data's markers (`<sep>`, `<speaker2>`) it holds become spaces
        (they would fake turn boundaries), its whitespace one space."""
        builder = self.pair_builder
        return f"{builder.speaker_tokens[speaker % len(builder.speaker_tokens)]}{builder.clean_text(text)}"
