"""Tokenizers: trained on the training split with `tokenizers`, or pretrained; both as HF fast tokenizers."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from weaver.errors import ConfigError, DataError
from weaver.hub import OFFLINE_HINT, hub_reachable, offline_mode

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# Fixed ids 0..3, which the native model's config defaults expect.
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
ALGORITHMS = ("bpe", "unigram")
# Bump when the tokenizer recipe changes so cached tokenizers are not reused.
RECIPE_VERSION = "1"

TextBatches = Callable[[], Iterator[list[str]]]


def wrap_fast(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )


class TrainedTokenizer:
    """A shared source/target vocabulary learnt from the training split, cached by data fingerprint."""

    def __init__(self, algorithm: str = "bpe", vocab_size: int = 8000, min_frequency: int = 2) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"tokenizer.algorithm must be one of {ALGORITHMS}, got '{algorithm}'.")
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ConfigError(f"tokenizer.vocab_size must be larger than {len(SPECIAL_TOKENS)}, got {vocab_size}.")
        self.algorithm, self.vocab_size, self.min_frequency = algorithm, vocab_size, min_frequency

    def cache_key(self, data_fingerprint: str) -> str:
        recipe = f"{RECIPE_VERSION}|{self.algorithm}|{self.vocab_size}|{self.min_frequency}|{data_fingerprint}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def build(self, texts: TextBatches, data_fingerprint: str, cache_dir: str | None) -> PreTrainedTokenizerFast:
        path = Path(cache_dir or tempfile.gettempdir()) / "tokenizers" / self.cache_key(data_fingerprint)
        file = path / "tokenizer.json"
        if file.is_file():
            log.info("Reusing the tokenizer cached at %s", file)
            return wrap_fast(Tokenizer.from_file(str(file)))
        log.info("Training a %s tokenizer (vocabulary %d) on the training split", self.algorithm, self.vocab_size)
        tokenizer = self.train(texts)
        path.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader (another rank) never sees half a file.
        partial = path / f"tokenizer.json.{os.getpid()}.tmp"
        tokenizer.save(str(partial))
        partial.replace(file)
        return wrap_fast(tokenizer)

    def train(self, texts: TextBatches) -> Tokenizer:
        if self.algorithm == "bpe":
            # Byte-level: every string is representable, so there is never an unknown token.
            tokenizer = Tokenizer(models.BPE(unk_token=UNK))
            tokenizer.normalizer = normalizers.NFC()
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            tokenizer.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=self.vocab_size,
                min_frequency=self.min_frequency,
                special_tokens=SPECIAL_TOKENS,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        else:
            tokenizer = Tokenizer(models.Unigram())
            tokenizer.normalizer = normalizers.NFKC()
            tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
            tokenizer.decoder = decoders.Metaspace()
            trainer = trainers.UnigramTrainer(
                vocab_size=self.vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK, show_progress=False
            )
        tokenizer.train_from_iterator(texts(), trainer=trainer)
        eos_id = tokenizer.token_to_id(EOS)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
        )
        return tokenizer


class PretrainedTokenizer:
    """A tokenizer folder saved with `save_pretrained`, or a Hub id (the real Hub code path)."""

    def __init__(self, name_or_path: str, trust_remote_code: bool = False) -> None:
        self.name_or_path, self.trust_remote_code = name_or_path, trust_remote_code

    def build(self, texts: TextBatches, data_fingerprint: str, cache_dir: str | None) -> PreTrainedTokenizerBase:
        del texts, data_fingerprint, cache_dir  # nothing to train
        kwargs = {"trust_remote_code": self.trust_remote_code}
        if Path(self.name_or_path).expanduser().is_dir():
            return AutoTokenizer.from_pretrained(str(Path(self.name_or_path).expanduser()), **kwargs)
        try:
            if hub_reachable():
                return AutoTokenizer.from_pretrained(self.name_or_path, **kwargs)
            with offline_mode():
                return AutoTokenizer.from_pretrained(self.name_or_path, **kwargs)
        except OSError as error:
            alternative = "Point tokenizer.name_or_path at a local folder saved with save_pretrained."
            raise DataError(OFFLINE_HINT.format(name=self.name_or_path, alternative=alternative)) from error


def fingerprint_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    """Stable across processes, so tokenized datasets are found again in the `datasets` cache."""
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        state = tokenizer.backend_tokenizer.to_str()
    else:
        state = f"{type(tokenizer).__name__}|{tokenizer.name_or_path}|{len(tokenizer)}"
    return hashlib.sha256(state.encode()).hexdigest()[:16]
