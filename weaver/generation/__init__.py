"""Decoding: `GenerationConfig` and batched greedy / beam / sampling search over any `Seq2SeqModel`."""

from weaver.generation.config import GenerationConfig
from weaver.generation.search import (
    Seq2SeqModel,
    beam_search,
    filter_logits,
    generate,
    greedy_search,
    repeated_ngram_mask,
    sample,
)

__all__ = [
    "GenerationConfig",
    "Seq2SeqModel",
    "beam_search",
    "filter_logits",
    "generate",
    "greedy_search",
    "repeated_ngram_mask",
    "sample",
]
