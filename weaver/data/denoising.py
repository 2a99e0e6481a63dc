"""Denoising examples: BART's text infilling (Lewis et al. 2020) and T5's span corruption (Raffel et al. 2020).

Two uses, one mechanism (`data.denoising`):
- Beside a task's own pairs. A model trained from scratch on a few thousand labelled pairs
  sees each source only as context for a short target: it learns the sources' language slowly, and copying a name
  token by token from the source, which a summary needs, it sees a few times per name at most. `copies` examples
  are added next to every training example, whose target is that example's source and whose source is the same
  text corrupted: reconstructing them is practice at reading the sources and at copying them out in order.
  Validation and test are untouched, so the monitored metrics stay the task's own.
- As the whole task, when the examples are raw texts (`task=pretrain`, `weaver.data.raw_text.RawText`): every
  split's examples are corrupted texts, so the validation loss is the objective's own, on held-out text.

Noise is drawn once, per (split, copy, example) from a fixed seed: the examples are cached by `datasets` with the
rest of the tokenized data, and a run, a resumed run and a rerun all see the same ones.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerBase

from weaver.errors import ConfigError, require_positive_int

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
class Corruption:
    """What both objectives share: `copies` corrupted versions of each training text (one of each validation and
    test text), drawn from `seed`."""

    copies: int = 1
    seed: int = 0
    # The corrupted splits logged already: the data module builds them in prepare_data and again in setup.
    logged: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        require_positive_int("data.denoising.copies", self.copies)

    # The option naming the tokens the objective writes.
    tokens_key = ""

    @property
    def special_tokens(self) -> list[str]:
        """Tokens the objective writes, which join the special tokens of a tokenizer the run trains or loads."""
        raise NotImplementedError

    def text_length(self, max_source_length: int, max_target_length: int) -> int:
        """Tokens of each text kept before corrupting it."""
        raise NotImplementedError

    def pair(
        self,
        ids: list[int],
        special: np.ndarray,
        tokenizer: PreTrainedTokenizerBase,
        marker_ids: list[int],
        rng: np.random.Generator,
    ) -> tuple[list[int], list[int]]:
        """(corrupted source, target) of one tokenized text; `special` marks its special tokens, `marker_ids` are the
        ids of `special_tokens`."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        missing = [token for token in self.special_tokens if token not in tokenizer.all_special_tokens]
        if missing:
            raise ConfigError(
                f"data.denoising.{self.tokens_key}: '{missing[0]}' is not a special token of the tokenizer (a "
                f"checkpoint's or a pretrained tokenizer keeps the special tokens it was made with): name its own."
            )

    def examples(
        self,
        data: Dataset,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        split: str = "train",
        first_id: int = 0,
    ) -> Dataset:
        """Corrupted copies of `data` (tokenized rows whose `input_ids` are the texts, cut to `max_length` first):
        `copies` of a training split, one of any other, with example ids from `first_id` on and every other column
        as in `data`."""
        self.check_tokenizer(tokenizer)
        special_ids = np.array(sorted(set(tokenizer.all_special_ids)))
        marker_ids = tokenizer.convert_tokens_to_ids(self.special_tokens)
        split_code = zlib.crc32(split.encode())

        def noised(batch: dict[str, list[Any]], indices: list[int], copy: int) -> dict[str, list[Any]]:
            inputs, labels = [], []
            for index, ids in zip(indices, batch["input_ids"], strict=True):
                if len(ids) > max_length:  # cut as the tokenizer cuts: its final token (EOS) stays
                    ids = ids[: max_length - 1] + ids[-1:]
                # Training draws keep the seeds of the copies added beside a task's pairs; other splits their own.
                key = [self.seed, copy, index] if split == "train" else [self.seed, split_code, copy, index]
                rng = np.random.default_rng(key)
                source, target = self.pair(ids, np.isin(ids, special_ids), tokenizer, marker_ids, rng)
                inputs.append(source)
                labels.append(target)
            return {
                "input_ids": inputs,
                "labels": labels,
                "example_id": [first_id + copy * len(data) + index for index in indices],
                "target": batch["source"],
                "source_truncated": [False] * len(indices),
            }

        copies = [
            data.map(
                noised,
                batched=True,
                with_indices=True,
                fn_kwargs={"copy": copy},
                new_fingerprint=fingerprint(f"{data._fingerprint}|{max_length}|{self!r}|{split}|{copy}"),
                desc=f"Denoising {split}, copy {copy}",
            )
            for copy in range(self.copies if split == "train" else 1)
        ]
        logged = fingerprint(f"{data._fingerprint}|{max_length}|{self!r}|{split}")
        if logged not in self.logged:
            self.logged.add(logged)
            log.info(
                "Denoising: %d corrupted copies of %d %s texts (%s).", len(copies), len(data), split, self.describe()
            )
        return concatenate_datasets(copies)


@dataclass
class TextInfilling(Corruption):
    """BART's noise: `mask_ratio` of a text's words
    (never special tokens) are masked in spans whose lengths in words follow Poisson(`mean_span_words`), at least one
    word each, and each span becomes one `mask_token`, so the model must also tell how many words are missing.

    The original text is cut to the shorter of `data.max_source_length` and `data.max_target_length` tokens first,
    so the corrupted source and its target cover the same words. `mask_token` joins the special tokens of a
    tokenizer the run trains or loads (the data module adds it; BART's own is `<mask>`); a tokenizer given with a
    checkpoint must have it already.
    """

    mask_ratio: float = 0.3
    mean_span_words: float = 3.0
    mask_token: str = "<mask>"
    tokens_key = "mask_token"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"data.denoising.mask_ratio must be in (0, 1), got {self.mask_ratio}.")
        if self.mean_span_words <= 0:
            raise ConfigError(f"data.denoising.mean_span_words must be > 0, got {self.mean_span_words}.")

    @property
    def special_tokens(self) -> list[str]:
        return [self.mask_token]

    def text_length(self, max_source_length: int, max_target_length: int) -> int:
        return min(max_source_length, max_target_length)  # the corrupted source and its target cover the same words

    def describe(self) -> str:
        return f"text infilling: {100 * self.mask_ratio:.0f}% of words masked, spans of ~{self.mean_span_words:g} words"

    def pair(
        self,
        ids: list[int],
        special: np.ndarray,
        tokenizer: PreTrainedTokenizerBase,
        marker_ids: list[int],
        rng: np.random.Generator,
    ) -> tuple[list[int], list[int]]:
        starts = word_starts(tokenizer.convert_ids_to_tokens(ids), special)
        return self.corrupt(ids, starts, special, marker_ids[0], rng), list(ids)

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


@dataclass
class SpanCorruption(Corruption):
    """T5's noise: `noise_density` of a text's tokens (never special ones) are dropped in spans of `mean_span_tokens`
    on average, each span replaced by its own sentinel (`<extra_id_0>`, `<extra_id_1>`, ...); the target is each
    sentinel followed by the tokens it stands for, then EOS. Texts are cut to `data.max_source_length` tokens first;
    targets are about a third as long (noise plus one sentinel per span).

    As in T5, a text of n tokens has round(n * noise_density) noise tokens in round(noise / mean_span_tokens) spans,
    at most `num_sentinels` of them: noise and kept tokens are each split into that many non-empty runs at random,
    and the runs alternate, kept first."""

    noise_density: float = 0.15
    mean_span_tokens: float = 3.0
    num_sentinels: int = 100
    sentinel_format: str = "<extra_id_{}>"
    tokens_key = "sentinel_format"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.noise_density < 1.0:
            raise ConfigError(f"data.denoising.noise_density must be in (0, 1), got {self.noise_density}.")
        if self.mean_span_tokens < 1:
            raise ConfigError(f"data.denoising.mean_span_tokens must be >= 1, got {self.mean_span_tokens}.")
        require_positive_int("data.denoising.num_sentinels", self.num_sentinels)
        if "{}" not in self.sentinel_format:
            raise ConfigError(
                f"data.denoising.sentinel_format={self.sentinel_format!r} needs '{{}}' where the span number goes."
            )

    @property
    def special_tokens(self) -> list[str]:
        return [self.sentinel_format.format(number) for number in range(self.num_sentinels)]

    def text_length(self, max_source_length: int, max_target_length: int) -> int:
        return max_source_length

    def describe(self) -> str:
        return f"span corruption: {100 * self.noise_density:.0f}% of tokens, spans of ~{self.mean_span_tokens:g}"

    def noise_mask(self, length: int, rng: np.random.Generator) -> np.ndarray:
        """(length,) True on the tokens a text of `length` corruptible tokens loses: non-empty runs of noise and of
        kept tokens alternating, kept first; no noise in a text too short to keep a token."""
        noise = min(max(round(length * self.noise_density), 1), length - 1)
        spans = min(max(round(noise / self.mean_span_tokens), 1), self.num_sentinels, noise, length - noise)
        if noise < 1 or spans < 1:
            return np.zeros(length, dtype=bool)

        def run_lengths(total: int) -> np.ndarray:  # `spans` positive parts summing to `total`
            cuts = np.sort(rng.choice(np.arange(1, total), size=spans - 1, replace=False)) if spans > 1 else []
            return np.diff(np.concatenate([[0], cuts, [total]])).astype(int)

        mask = np.zeros(length, dtype=bool)
        position = 0
        for kept, dropped in zip(run_lengths(length - noise), run_lengths(noise), strict=True):
            position += kept
            mask[position : position + dropped] = True
            position += dropped
        return mask

    def pair(
        self,
        ids: list[int],
        special: np.ndarray,
        tokenizer: PreTrainedTokenizerBase,
        marker_ids: list[int],
        rng: np.random.Generator,
    ) -> tuple[list[int], list[int]]:
        corruptible = np.flatnonzero(~special)
        noise = self.noise_mask(len(corruptible), rng)
        dropped = np.zeros(len(ids), dtype=bool)
        dropped[corruptible[noise]] = True
        # A span starts at a noise token whose corruptible predecessor was kept (special tokens in between, which
        # always stay, do not split a span).
        starts = np.zeros(len(ids), dtype=bool)
        starts[corruptible[noise & ~np.concatenate([[False], noise[:-1]])]] = True
        source, target, span = [], [], -1
        for position, token_id in enumerate(ids):
            if starts[position]:
                span += 1
                source.append(marker_ids[span])
                target.append(marker_ids[span])
            (target if dropped[position] else source).append(token_id)
        return source, [*target, tokenizer.eos_token_id]
