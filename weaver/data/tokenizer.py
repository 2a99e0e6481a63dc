"""Tokenizers: trained on the training split with `tokenizers`, or pretrained; both as HF fast tokenizers."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from weaver.errors import ConfigError
from weaver.hub import load_pretrained

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# Fixed ids 0..3, which the native model's config defaults expect.
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
ALGORITHMS = ("bpe", "unigram")
# Bump when the tokenizer recipe changes so cached tokenizers are not reused.
RECIPE_VERSION = "1"

TextBatches = Callable[[], Iterator[list[str]]]


def wrap_fast(tokenizer: Tokenizer, extra_special_tokens: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        extra_special_tokens=list(extra_special_tokens),
    )


def clean_special_tokens(tokens: Sequence[str] | None) -> list[str]:
    """Extra special tokens (dialogue markers such as `<speaker1>`), blanks and duplicates dropped."""
    return list(dict.fromkeys(str(token) for token in tokens or () if str(token).strip()))


class TrainedTokenizer:
    """A shared source/target vocabulary learnt from the training split, cached by data fingerprint.

    `extra_special_tokens` (e.g. `<speaker1>`, `<sep>`) get the ids right after the fixed four, are never split
    and are dropped when decoding with `skip_special_tokens`.
    """

    def __init__(
        self,
        algorithm: str = "bpe",
        vocab_size: int = 8000,
        min_frequency: int = 2,
        extra_special_tokens: Sequence[str] | None = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"tokenizer.algorithm must be one of {ALGORITHMS}, got '{algorithm}'.")
        self.extra_special_tokens = clean_special_tokens(extra_special_tokens)
        special = len(SPECIAL_TOKENS) + len(self.extra_special_tokens)
        if vocab_size <= special:
            raise ConfigError(f"tokenizer.vocab_size must be larger than {special}, got {vocab_size}.")
        self.algorithm, self.vocab_size, self.min_frequency = algorithm, vocab_size, min_frequency

    def cache_key(self, data_fingerprint: str) -> str:
        recipe = f"{RECIPE_VERSION}|{self.algorithm}|{self.vocab_size}|{self.min_frequency}|{data_fingerprint}"
        if self.extra_special_tokens:
            recipe += "|" + "|".join(self.extra_special_tokens)
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def build(self, texts: TextBatches, data_fingerprint: str, cache_dir: str | None) -> PreTrainedTokenizerFast:
        path = Path(cache_dir or tempfile.gettempdir()) / "tokenizers" / self.cache_key(data_fingerprint)
        file = path / "tokenizer.json"
        if file.is_file():
            log.info("Reusing the tokenizer cached at %s", file)
            return wrap_fast(Tokenizer.from_file(str(file)), self.extra_special_tokens)
        log.info("Training a %s tokenizer (vocabulary %d) on the training split", self.algorithm, self.vocab_size)
        tokenizer = self.train(texts)
        path.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader (another rank) never sees half a file.
        partial = path / f"tokenizer.json.{os.getpid()}.tmp"
        tokenizer.save(str(partial))
        partial.replace(file)
        # Read back from the file, so this run and later ones fingerprint the very same tokenizer.
        return wrap_fast(Tokenizer.from_file(str(file)), self.extra_special_tokens)

    def train(self, texts: TextBatches) -> Tokenizer:
        special_tokens = SPECIAL_TOKENS + self.extra_special_tokens
        if self.algorithm == "bpe":
            # Byte-level: every string is representable, so there is never an unknown token.
            tokenizer = Tokenizer(models.BPE(unk_token=UNK))
            tokenizer.normalizer = normalizers.NFC()
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            tokenizer.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=self.vocab_size,
                min_frequency=self.min_frequency,
                special_tokens=special_tokens,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        else:
            tokenizer = Tokenizer(models.Unigram())
            tokenizer.normalizer = normalizers.NFKC()
            tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
            tokenizer.decoder = decoders.Metaspace()
            trainer = trainers.UnigramTrainer(
                vocab_size=self.vocab_size, special_tokens=special_tokens, unk_token=UNK, show_progress=False
            )
        if self.extra_special_tokens:
            # Registered before training (with the ids the trainer gives them), so the training text is split at
            # them: "<speaker1>hello" counts the word "hello", not "<", "speaker", "1>hello".
            tokenizer.add_special_tokens(special_tokens)
        tokenizer.train_from_iterator(texts(), trainer=trainer)
        eos_id = tokenizer.token_to_id(EOS)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
        )
        return tokenizer


class PretrainedTokenizer:
    """A tokenizer folder saved with `save_pretrained`, or a Hub id (the real Hub code path).

    `src_lang`/`tgt_lang` are the language codes of multilingual tokenizers (mBART's `en_XX`, NLLB's `eng_Latn`):
    they choose the language tokens added to sources and, through `text_target`, to targets.
    """

    def __init__(
        self,
        name_or_path: str,
        trust_remote_code: bool = False,
        extra_special_tokens: Sequence[str] | None = None,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
    ) -> None:
        self.name_or_path, self.trust_remote_code = name_or_path, trust_remote_code
        self.extra_special_tokens = clean_special_tokens(extra_special_tokens)
        self.kwargs = {name: value for name, value in (("src_lang", src_lang), ("tgt_lang", tgt_lang)) if value}

    def build(self, texts: TextBatches, data_fingerprint: str, cache_dir: str | None) -> PreTrainedTokenizerBase:
        del texts, data_fingerprint, cache_dir  # nothing to train
        tokenizer = self.load()
        if self.extra_special_tokens:  # new ids past the pretrained vocabulary
            tokenizer.add_special_tokens(
                {"extra_special_tokens": self.extra_special_tokens}, replace_extra_special_tokens=False
            )
        return tokenizer

    def load(self) -> PreTrainedTokenizerBase:
        """Nothing to train: the folder or Hub id as it is, padding with EOS when it has no pad token (padded
        positions are masked, so any id will do)."""

        def from_pretrained(name_or_path: str) -> PreTrainedTokenizerBase:
            kwargs = dict(self.kwargs)
            if is_weaver_export(name_or_path):  # a config transformers cannot read: the tokenizer files say it all
                kwargs.setdefault("config", PretrainedConfig())
            return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=self.trust_remote_code, **kwargs)

        hint = (
            " (model=hf_seq2seq and model=hf_causal_lm set it from model.name_or_path, model=weaver_pretrained from"
            " model.init_from)"
        )
        if not self.name_or_path:
            raise ConfigError(
                f"tokenizer.name_or_path is not set: point it, or model.name_or_path, at a folder or a Hub id{hint}."
            )
        if Path(self.name_or_path).expanduser().is_file():  # a training checkpoint's own tokenizer
            from weaver.checkpoints import checkpoint_tokenizer  # it builds models: imported here, not at module load

            tokenizer = checkpoint_tokenizer(Path(self.name_or_path).expanduser(), "tokenizer.name_or_path")
        else:
            tokenizer = load_pretrained(from_pretrained, self.name_or_path, "tokenizer.name_or_path", hint)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:  # GPT-2, Llama
            tokenizer.pad_token = tokenizer.eos_token
            log.info("The tokenizer has no pad token: batches are padded with its EOS token %r.", tokenizer.eos_token)
        return tokenizer


def is_weaver_export(name_or_path: str) -> bool:
    """A folder `export.py` wrote for the native model (its config.json is Weaver's, which transformers warns of)."""
    from weaver.models.weaver import CONFIG_FILE, MODEL_TYPE  # models import data: imported here, not at load

    config = Path(name_or_path).expanduser() / CONFIG_FILE
    try:
        return config.is_file() and json.loads(config.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False


class GivenTokenizer:
    """A tokenizer built already (a checkpoint's), for a data module that must neither train nor load another."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def build(self, texts: TextBatches, data_fingerprint: str, cache_dir: str | None) -> PreTrainedTokenizerBase:
        del texts, data_fingerprint, cache_dir
        return self.tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> None:
    """`save_pretrained`, less the truncation and padding that the last encoding call left on a fast tokenizer's
    backend: saved, they would cut every text read by `tokenizers` alone (`Tokenizer.from_file`) at that length."""
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        tokenizer.backend_tokenizer.no_truncation()
        tokenizer.backend_tokenizer.no_padding()
    tokenizer.save_pretrained(str(folder))


PYTHON_SIDE_SETTINGS = ("src_lang", "tgt_lang", "truncation_side")


def fingerprint_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    """Stable across processes, so tokenized datasets are found again in the `datasets` cache."""
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        # Without the truncation/padding a previous call left set (not part of the tokenizer): the same before and
        # after tokenizing, so `prepare_data` and `setup` find the same cached splits.
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        state = backend.to_str()
    else:
        state = f"{type(tokenizer).__name__}|{tokenizer.name_or_path}|{len(tokenizer)}"
    # Settings held in Python, not in the backend: mBART's and NLLB's target language code is added only to
    # targets (`text_target=`), and the side truncation cuts.
    state += "".join(f"|{name}={getattr(tokenizer, name, None)}" for name in PYTHON_SIDE_SETTINGS)
    return hashlib.sha256(state.encode()).hexdigest()[:16]
