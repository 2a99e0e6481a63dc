"""Which source tokens each output token relied on: generate for a batch of sources, then score every (output,
source) token pair by cross-attention, by recall (models with memory) or by gradient attribution."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from weaver.errors import ConfigError
from weaver.explain.attention import (
    RecordedAttention,
    base_model,
    cross_attention_readers,
    reads_a_source,
    recall_settings,
    recorded_cross_attention,
)
from weaver.explain.gradients import GRADIENT_METHODS, gradient_relevance
from weaver.generation import GenerationConfig
from weaver.models.memory import source_windows

METHODS = ("cross_attention", "recall", *GRADIENT_METHODS)
WORD_START_MARKERS = ("Ġ", "▁")  # byte-level BPE and SentencePiece/Metaspace pieces that begin a word


@dataclass
class Span:
    start: int  # source token positions, end exclusive
    end: int
    text: str
    score: float  # the span's share of the relevance, averaged over output tokens


@dataclass
class Explanation:
    """One source, its output, and the relevance of each source token to each output token."""

    method: str
    source_tokens: list[str]  # one readable label per token, a leading space where a word starts
    output_tokens: list[str]
    output_text: str
    relevance: Tensor  # (T, S) float32; sparse (COO) for recall, where S may be a memory of any length
    layers: list[int] | None = None  # the decoder layers and heads averaged (attention methods)
    heads: list[int] | None = None
    recalled: RecordedAttention | None = None  # recall: (L, H, T, K) memory indices and weights
    source_special: list[bool] | None = None  # which source tokens are the tokenizer's special tokens (</s>, <sep>)

    @property
    def signed(self) -> bool:
        """Gradient attributions can be negative (a token arguing against the output); attention cannot."""
        return self.method in GRADIENT_METHODS

    def source_scores(self) -> Tensor:
        """(S,) each source token's relevance magnitude, averaged over output tokens."""
        magnitude = self.relevance.abs()
        total = torch.sparse.sum(magnitude, 0).to_dense() if magnitude.is_sparse else magnitude.sum(0)
        return total / max(self.relevance.size(0), 1)

    def spans(self, count: int = 3, max_tokens: int = 8, share: float = 0.25) -> list[Span]:
        """The ``count`` most relevant source spans, best first (see `top_spans`): whole words of the source,
        without special tokens (</s>, <sep>); none for an empty output."""
        if not self.output_text:
            return []
        scores = self.source_scores()
        special = self.source_special or [False] * len(self.source_tokens)
        visible = [bool(token.strip()) for token in self.source_tokens]  # a span of a line break alone says nothing
        starts = [
            index == 0 or special[index - 1] or token[:1].isspace() or self.source_tokens[index - 1][-1:].isspace()
            for index, token in enumerate(self.source_tokens)
        ]
        spans = [
            Span(start, end, "".join(self.source_tokens[start:end]).strip(), float(scores[start:end].sum()))
            for start, end in top_spans(scores, count, max_tokens, share, visible, starts, special)
        ]
        return sorted(spans, key=lambda span: -span.score)

    def to_dict(self) -> dict[str, Any]:
        """The scores as JSON: recall's as the fetched (indices, weights), never as a dense memory-long matrix."""
        relevance = self.relevance.coalesce() if self.relevance.is_sparse else self.relevance
        values: dict[str, Any] = {
            "method": self.method,
            "layers": self.layers,
            "heads": self.heads,
            "source_tokens": self.source_tokens,
            "output_tokens": self.output_tokens,
            "output_text": self.output_text,
            "top_spans": [vars(span) for span in self.spans()],
        }
        if relevance.is_sparse:
            values["relevance"] = {
                "format": "coo",
                "shape": list(relevance.shape),
                "indices": relevance.indices().tolist(),
                "values": relevance.values().tolist(),
            }
        else:
            values["relevance"] = {"format": "dense", "shape": list(relevance.shape), "values": relevance.tolist()}
        if self.recalled is not None:
            values["recall"] = {"indices": self.recalled.indices.tolist(), "weights": self.recalled.weights.tolist()}
        return values


def top_spans(
    scores: Tensor,
    count: int,
    max_tokens: int,
    share: float,
    peaks: list[bool] | None = None,
    word_starts: list[bool] | None = None,
    breaks: list[bool] | None = None,
) -> list[tuple[int, int]]:
    """Up to ``count`` non-overlapping (start, end) spans around the highest peaks: each starts at the highest-scoring
    token not yet covered (among those ``peaks`` allows) and grows towards its higher neighbour while that neighbour
    scores at least ``share`` of the peak, up to ``max_tokens`` tokens (``share=0``: as wide as that allows, a peak
    with its context); then, given ``word_starts``, to the edges of the words it cuts. No span takes in a token
    ``breaks`` marks (special tokens)."""
    values = scores.tolist()
    free = [not broken for broken in breaks] if breaks else [True] * len(values)
    allowed = peaks or [True] * len(values)
    spans: list[tuple[int, int]] = []
    for _ in range(count):
        candidates = (i for i, open_ in enumerate(free) if open_ and allowed[i])
        peak = max(candidates, key=values.__getitem__, default=None)
        if peak is None:
            break
        start, end = peak, peak + 1
        while end - start < max_tokens:
            left = values[start - 1] if start > 0 and free[start - 1] else None
            right = values[end] if end < len(values) and free[end] else None
            best = max((v for v in (left, right) if v is not None), default=None)
            if best is None or best < share * values[peak]:
                break
            if right is not None and (left is None or right >= left):
                end += 1
            else:
                start -= 1
        if word_starts is not None:
            while start > 0 and free[start - 1] and not word_starts[start]:
                start -= 1
            while end < len(values) and free[end] and not word_starts[end]:
                end += 1
        free[start:end] = [False] * (end - start)
        spans.append((start, end))
    return spans


REPLACEMENT = "\ufffd"  # what decoding part of a character's UTF-8 bytes gives


def token_labels(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    """Each token as text, with a leading space where it starts a word, so that labels read as the text does."""
    pieces = tokenizer.convert_ids_to_tokens(ids)
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    whole_characters(tokenizer, ids, texts)
    return [
        " " + text.lstrip(" ") if piece.startswith(WORD_START_MARKERS) else text
        for piece, text in zip(pieces, texts, strict=True)
    ]


def whole_characters(tokenizer: PreTrainedTokenizerBase, ids: list[int], texts: list[str], most: int = 8) -> None:
    """Byte-level tokens may split a character's UTF-8 bytes (日, ü, an emoji), each decoding alone to U+FFFD: such
    a run of tokens gets their joint text on its first token and empty labels after, in place, so that labels read
    (and spans join) as the text does."""
    start = 0
    while start < len(ids):
        if REPLACEMENT in texts[start]:
            for end in range(start + 2, min(len(ids), start + most) + 1):
                joined = tokenizer.decode(ids[start:end], clean_up_tokenization_spaces=False)
                if REPLACEMENT not in joined:
                    texts[start:end] = [joined, *[""] * (end - start - 1)]
                    start = end - 1
                    break
        start += 1


def chosen_indices(key: str, values: int | list[int] | None, available: int, what: str) -> list[int]:
    """``values`` (an index or a list; negative counts from the end; None: all) as sorted indices < available."""
    if values is None:
        return list(range(available))
    chosen = list(values) if isinstance(values, Sequence) and not isinstance(values, str) else [values]
    if not chosen:
        raise ConfigError(f"{key}=[]: choose at least one of the model's {available} {what} (or null: all).")
    for value in chosen:
        if isinstance(value, bool) or not isinstance(value, int) or not -available <= value < available:
            raise ConfigError(f"{key}={values}: the model has {available} {what} (0 to {available - 1}).")
    return sorted({value % available for value in chosen})


class Explainer:
    """Called on a batch (`input_ids`, `attention_mask`) as `Predictor` encodes it: one `Explanation` per source,
    for the output that ``generation`` produces.

    Attention methods read every chosen layer's weights in one teacher-forced forward over (source, output);
    gradient methods take one backward pass per output token (and integration step), so they run on sources of
    at most ``max_gradient_source_tokens`` tokens."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        generation: GenerationConfig,
        method: str | None = None,
        layers: int | list[int] | None = None,
        heads: int | list[int] | None = None,
        integration_steps: int = 16,
        max_gradient_source_tokens: int = 512,
    ) -> None:
        if not reads_a_source(model):
            raise ConfigError(
                f"model: relevance to the source needs an encoder-decoder; a {type(base_model(model)).__name__} "
                "reads prompt and output as one sequence."
            )
        memory = recall_settings(model)
        method = method or ("recall" if memory is not None else "cross_attention")
        check_method(method)
        if method == "recall" and memory is None:
            raise ConfigError(
                "method=recall needs a model with memory: add memory=recall, or use method=cross_attention."
            )
        if method == "cross_attention" and memory is not None:
            raise ConfigError(
                "method=cross_attention: this model attends only to its top_k memory entries per query; "
                "use method=recall."
            )
        if (generation.mbr_num_samples or 1) > 1:
            raise ConfigError(
                f"generation.mbr_num_samples={generation.mbr_num_samples}: relevance is shown for one generated "
                "output per source; set generation.mbr_num_samples=0 or pick another generation config."
            )
        self.model, self.tokenizer, self.generation, self.method = model, tokenizer, generation, method
        self.special_ids = set(tokenizer.all_special_ids)
        self.integration_steps, self.max_gradient_source_tokens = integration_steps, max_gradient_source_tokens
        self.memory = memory
        self.layers: list[int] | None = None
        self.heads: list[int] | None = None
        if method in GRADIENT_METHODS:
            if layers is not None or heads is not None:
                raise ConfigError(f"layers= and heads= choose attention; method={method} attributes to the source.")
        else:
            readers = cross_attention_readers(model)
            self.layers = chosen_indices("layers", layers, len(readers), "decoder layers")
            self.heads = chosen_indices("heads", heads, readers[0].num_heads, "cross-attention heads")

    def __call__(self, batch: dict[str, Tensor]) -> list[Explanation]:
        input_ids, source_mask = batch["input_ids"], batch["attention_mask"].bool()
        with torch.no_grad():
            generated = self.model.generate(input_ids, source_mask, self.generation)
        outputs = [self.trimmed(row) for row in generated.tolist()]
        decoder_input_ids = self.teacher_forcing_inputs(outputs).to(input_ids.device)
        if self.method in GRADIENT_METHODS:
            rows = [
                self.attribution(ids[mask], decoder_input_ids[i, : len(outputs[i])], outputs[i])
                for i, (ids, mask) in enumerate(zip(input_ids, source_mask, strict=True))
            ]
            return [
                self.explanation(ids[mask], output, row)
                for ids, mask, output, row in zip(input_ids, source_mask, outputs, rows, strict=True)
            ]
        with recorded_cross_attention(self.model, self.layers, source_mask) as recorded:
            self.model(input_ids, source_mask, decoder_input_ids)
        weights = torch.stack([layer.weights for layer in recorded], 1)[:, :, self.heads]  # (B, L, H, T, S or K)
        if self.memory is None:
            return [
                self.explanation(input_ids[i][mask], output, weights[i][..., : len(output), mask].mean((0, 1)))
                for i, (mask, output) in enumerate(zip(source_mask, outputs, strict=True))
            ]
        indices = torch.stack([layer.indices for layer in recorded], 1)[:, :, self.heads]
        return [
            self.recall_explanation(input_ids[i][mask], output, mask, RecordedAttention(weights[i], indices[i]))
            for i, (mask, output) in enumerate(zip(source_mask, outputs, strict=True))
        ]

    def trimmed(self, tokens: list[int]) -> list[int]:
        """A generated row up to its EOS, included; a row without one ran to max_new_tokens and has no padding."""
        eos = self.tokenizer.eos_token_id
        return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens

    def teacher_forcing_inputs(self, outputs: list[list[int]]) -> Tensor:
        """(B, T) decoder inputs: the start token, then each output but its last token, padded on the right."""
        start, pad = self.model.decoder_start_token_id, self.tokenizer.pad_token_id
        inputs = torch.full((len(outputs), max(map(len, outputs))), pad)
        for row, output in enumerate(outputs):
            inputs[row, : len(output)] = torch.tensor([start, *output[:-1]])
        return inputs

    def attribution(self, source_ids: Tensor, decoder_input_ids: Tensor, output: list[int]) -> Tensor:
        mask = torch.ones_like(source_ids, dtype=torch.bool)[None]
        alternative = "recall" if self.memory is not None else "cross_attention"
        if len(source_ids) > self.max_gradient_source_tokens:
            raise ConfigError(
                f"method={self.method}: a source of {len(source_ids)} tokens is longer than "
                f"max_gradient_source_tokens={self.max_gradient_source_tokens} (one backward pass per output token "
                f"over the whole source); use method={alternative}."
            )
        windows = 1 if self.memory is None else int((source_windows(source_ids[None], mask, self.memory)[1] >= 0).sum())
        if windows > 1:
            segments = (
                ", a new one at each model.memory.segment_token" if self.memory.segment_token_id is not None else ""
            )
            raise ConfigError(
                f"method={self.method}: the memory reads this source of {len(source_ids)} tokens in {windows} "
                f"encoder windows (model.memory.window={self.memory.window}{segments}), and gradients are taken "
                f"through one; use method={alternative}."
            )
        return gradient_relevance(
            self.model,
            self.method,
            source_ids[None],
            mask,
            decoder_input_ids[None],
            torch.tensor([output], device=source_ids.device),
            self.tokenizer.pad_token_id,
            self.integration_steps,
        )

    def recall_explanation(
        self, source_ids: Tensor, output: list[int], source_mask: Tensor, recalled: RecordedAttention
    ) -> Explanation:
        """Keeps what each output step fetched (L, H, T, K) and their mean over layers and heads as a sparse (T, S)
        matrix. Entries beyond the source's own tokens carry no weight and are dropped."""
        fetched = min(recalled.indices.size(-1), len(source_ids))
        position = source_mask.cumsum(0) - 1  # memory row -> source token position
        indices = position[recalled.indices[..., : len(output), :fetched]]
        weights = recalled.weights[..., : len(output), :fetched].float()
        rows = torch.arange(len(output), device=indices.device)[:, None].expand_as(indices[0, 0])
        coordinates = torch.stack([rows.expand_as(indices).flatten(), indices.flatten()])
        relevance = torch.sparse_coo_tensor(
            coordinates.cpu(),
            weights.flatten().cpu() / (weights.size(0) * weights.size(1)),
            (len(output), len(source_ids)),
            check_invariants=True,
        ).coalesce()
        return self.explanation(source_ids, output, relevance, RecordedAttention(weights.cpu(), indices.cpu()))

    def explanation(
        self, source_ids: Tensor, output: list[int], relevance: Tensor, recalled: RecordedAttention | None = None
    ) -> Explanation:
        return Explanation(
            method=self.method,
            source_tokens=token_labels(self.tokenizer, source_ids.tolist()),
            output_tokens=token_labels(self.tokenizer, output),
            output_text=self.tokenizer.decode(output, skip_special_tokens=True).strip(),
            relevance=relevance.float().cpu(),
            layers=self.layers,
            heads=self.heads,
            recalled=recalled,
            source_special=[token in self.special_ids for token in source_ids.tolist()],
        )


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not one of {', '.join(METHODS)}.")
