"""Decoding: `GenerationConfig` and batched greedy / beam / sampling search over any `Seq2SeqModel`."""

from weaver.generation.config import GenerationConfig
from weaver.generation.sampling import RowStreams, filter_logits
from weaver.generation.search import (
    Seq2SeqModel,
    ban_repeated_ngrams_,
    beam_search,
    generate,
    greedy_search,
    sample,
)

__all__ = [
    "GenerationConfig",
    "RowStreams",
    "Seq2SeqModel",
    "ban_repeated_ngrams_",
    "beam_search",
    "filter_logits",
    "generate",
    "greedy_search",
    "sample",
]
