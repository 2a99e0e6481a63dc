"""Denoising examples mixed into a task's training split: BART's text infilling (Lewis et al. 2020).

A model trained from scratch on a few thousand labelled pairs sees each source only as context for a short
target: it learns the sources' language slowly, and copying a name token by token from the source, which a summary
needs, it sees a few times per name at most. `data.denoising` adds, next to every training example, `copies`
examples whose target is that example's source and whose source is the same text with spans of whole words each
replaced by one mask token: reconstructing them is practice at reading the sources and at copying them out in order.
Validation and test are untouched, so the monitored metrics stay the task's own.

Noise is drawn once, per (copy, example) from a fixed seed: the examples are cached by `datasets` with the rest of
the tokenized data, and a run, a resumed run and a rerun all see the same ones.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerBase

from weaver.errors import ConfigError

log = logging.getLogger(__name__)

# The characters subword vocabularies mark the first piece of a word with: byte-level BPE (GPT-2, BART, this
# package's `bpe`) and SentencePiece / Metaspace (T5, Marian, this package's `unigram`).
WORD_START_MARKERS = ("\u0120", "\u2581")


def word_starts(tokens: list[str], special: np.ndarray) -> np.ndarray:
    """True where a token begins a word: it carries a word-start marker, is special, or follows a special token
    (or the start). Without markers in the vocabulary every token counts as a word."""
    starts = np.fromiter((token.startswith(WORD_START_MARKERS) for token in tokens), dtype=bool, count=len(tokens))
    if not starts.any():
        return np.ones(len(tokens), dtype=bool)
    starts |= special
    starts[1:] |= special[:-1]
    if len(starts):
        starts[0] = True
    return starts


def fingerprint(recipe: str) -> str:
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


@dataclass
class TextInfilling:
    """`copies` corrupted versions of every training source, each to be reconstructed: `mask_ratio` of its words
    (never special tokens) are masked in spans whose lengths in words follow Poisson(`mean_span_words`), at least one
    word each, and each span becomes one `mask_token`, so the model must also tell how many words are missing.

    The original text is cut to the shorter of `data.max_source_length` and `data.max_target_length` tokens first,
    so the corrupted source and its target cover the same words. `mask_token` joins the special tokens of a
    tokenizer the run trains or loads (the data module adds it; BART's own is `<mask>`); a tokenizer given with a
    checkpoint must have it already.
    """

    copies: int = 1
    mask_ratio: float = 0.3
    mean_span_words: float = 3.0
    mask_token: str = "<mask>"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or self.copies < 1:
            raise ConfigError(f"data.denoising.copies must be a positive integer, got {self.copies!r}.")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"data.denoising.mask_ratio must be in (0, 1), got {self.mask_ratio}.")
        if self.mean_span_words <= 0:
            raise ConfigError(f"data.denoising.mean_span_words must be > 0, got {self.mean_span_words}.")

    @property
    def special_tokens(self) -> list[str]:
        return [self.mask_token]

    def mask_token_id(self, tokenizer: PreTrainedTokenizerBase) -> int:
        if self.mask_token not in tokenizer.all_special_tokens:
            raise ConfigError(
                f"data.denoising.mask_token='{self.mask_token}' is not a special token of the tokenizer (a "
                f"checkpoint's tokenizer keeps the special tokens it was trained with): name one of its own."
            )
        return tokenizer.convert_tokens_to_ids(self.mask_token)

    def corrupt(
        self, ids: list[int], starts: np.ndarray, special: np.ndarray, mask_id: int, rng: np.random.Generator
    ) -> list[int]:
        """`ids` with masked spans of words, each span replaced by one `mask_id`."""
        word_of = np.cumsum(starts) - 1  # word index of each token
        maskable = np.unique(word_of[~special])
        target = round(self.mask_ratio * len(maskable))
        masked = np.zeros(word_of[-1] + 1 if len(ids) else 0, dtype=bool)
        while (count := int(masked[maskable].sum())) < target:
            length = min(max(1, int(rng.poisson(self.mean_span_words))), target - count)  # the last span is cut
            first = int(rng.integers(len(maskable)))
            masked[maskable[first : first + length]] = True
        drop = masked[word_of] & ~special
        out = []
        for position, token_id in enumerate(ids):
            if not drop[position]:
                out.append(token_id)
            elif position == 0 or not drop[position - 1]:
                out.append(mask_id)
        return out

    def examples(self, train: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
        """The corrupted copies of `train` (tokenized rows, `input_ids` = the sources, cut to `max_length`), with
        example ids after `train`'s and every other column as in `train`."""
        mask_id = self.mask_token_id(tokenizer)
        special_ids = np.array(sorted(set(tokenizer.all_special_ids)))
        first_id = int(max(train["example_id"], default=-1)) + 1

        def noised(batch: dict[str, list[Any]], indices: list[int], copy: int) -> dict[str, list[Any]]:
            inputs, labels = [], []
            for index, ids in zip(indices, batch["input_ids"], strict=True):
                if len(ids) > max_length:  # cut as the tokenizer cuts: its final token (EOS) stays
                    ids = ids[: max_length - 1] + ids[-1:]
                special = np.isin(ids, special_ids)
                starts = word_starts(tokenizer.convert_ids_to_tokens(ids), special)
                rng = np.random.default_rng([self.seed, copy, index])
                inputs.append(self.corrupt(ids, starts, special, mask_id, rng))
                labels.append(list(ids))
            return {
                "input_ids": inputs,
                "labels": labels,
                "example_id": [first_id + copy * len(train) + index for index in indices],
                "target": batch["source"],
                "source_truncated": [False] * len(indices),
            }

        copies = [
            train.map(
                noised,
                batched=True,
                with_indices=True,
                fn_kwargs={"copy": copy},
                new_fingerprint=fingerprint(f"{train._fingerprint}|{max_length}|{self!r}|{copy}"),
                desc=f"Denoising copy {copy}",
            )
            for copy in range(self.copies)
        ]
        log.info(
            "Denoising: %d corrupted copies of the %d training sources (%.0f%% of words masked, spans of ~%g words).",
            self.copies,
            len(train),
            100 * self.mask_ratio,
            self.mean_span_words,
        )
        return concatenate_datasets(copies)
