"""The LightningDataModule every task trains on: raw splits -> (source, target) pairs -> ids -> batches."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from datasets import Dataset, DatasetDict, concatenate_datasets
from lightning.pytorch import LightningDataModule
from lightning.pytorch.strategies import FSDPStrategy
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from weaver.data.batching import (
    EpochBatchSampler,
    FixedSizeBatchSampler,
    TokenBudgetBatchSampler,
    column_lengths,
    padding_efficiency,
)
from weaver.data.collate import Seq2SeqCollator
from weaver.data.columns import encoded_texts, select_pairs
from weaver.data.denoising import Corruption
from weaver.data.loader import ResumableDataLoader
from weaver.data.packing import PackedBatchSampler, PackedCollator, PackedRows
from weaver.data.sources import SPLITS, load_configured_splits
from weaver.data.tokenizer import TextBatches, fingerprint_tokenizer
from weaver.errors import ConfigError, DataError
from weaver.prompts import PROMPTS_VERSION, PromptTemplate

log = logging.getLogger(__name__)

# Bump when tokenization changes, so cached tokenized datasets are not reused.
TOKENIZATION_VERSION = "2"


class TokenizerSource(Protocol):
    def build(self, texts: TextBatches, data_fingerprint: str, cache_dir: str | None) -> PreTrainedTokenizerBase: ...


class PairBuilder(Protocol):
    """How raw rows become examples (`data.pair_builder`; default: `ColumnPairs` from the two field options).

    `build_pairs` turns one raw split into columns `example_id` (unique int), `source`, `target` and any others
    it needs later, skipping and counting bad rows. `encode_sources` tokenizes a batch of those rows' sources to at
    most `max_length` ids: columns `input_ids`, `source_truncated`, `source_text` (the text the ids encode, which a
    decoder-only model's prompt puts in its template) and, optionally, `source` rewritten to the text kept. A
    builder may list `special_tokens` the tokenizer must keep whole (checked once it is built).
    """

    def build_pairs(self, dataset: Dataset, split: str) -> Dataset: ...

    def encode_sources(
        self, tokenizer: PreTrainedTokenizerBase, batch: dict[str, list[Any]], max_length: int, prefix: str = ""
    ) -> dict[str, list[Any]]: ...


class ColumnPairs:
    """One example per row: `source_field` and `target_field` (dotted for nested records), sources cut on the right."""

    def __init__(self, source_field: str, target_field: str) -> None:
        self.source_field, self.target_field = source_field, target_field

    def build_pairs(self, dataset: Dataset, split: str) -> Dataset:
        return select_pairs(dataset, split, self.source_field, self.target_field)

    def encode_sources(
        self, tokenizer: PreTrainedTokenizerBase, batch: dict[str, list[Any]], max_length: int, prefix: str = ""
    ) -> dict[str, list[Any]]:
        texts = [prefix + text for text in batch["source"]]
        inputs = tokenizer(texts, max_length=max_length, truncation=True)
        return {
            "input_ids": inputs["input_ids"],
            "source_truncated": [bool(e.overflowing) for e in inputs.encodings],
            "source_text": encoded_texts(texts, inputs),
        }


def pair_builder_for(
    pair_builder: PairBuilder | None, source_field: str | None, target_field: str | None
) -> PairBuilder:
    """The data config's choice, for training and for inputs alike: `data.pair_builder` when set, else one example
    per row from the two field options."""
    if pair_builder is not None:
        return pair_builder
    if not (source_field and target_field):
        raise ConfigError("Set data.source_field and data.target_field (or a data.pair_builder, see conf/data/).")
    return ColumnPairs(source_field, target_field)


def rows_digest(dataset: Dataset) -> str:
    """A digest of a split's rows, their content and order."""
    digest = hashlib.sha256()
    for batch in dataset.iter(batch_size=1000):
        digest.update(json.dumps(batch, sort_keys=True, ensure_ascii=False, default=str).encode())
    return digest.hexdigest()[:16]


def require_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ConfigError(f"data.{name} must be a positive integer, got {value!r}.")


def report_train_overlap(pairs: DatasetDict) -> None:
    """Evaluation examples that are also training examples (a file's repeated rows, which carving a split from train
    puts on both sides, or rows two files share) score what the model was taught: counted in the log."""
    if "train" not in pairs:
        return
    taught = set(zip(pairs["train"]["source"], pairs["train"]["target"], strict=True))
    for split in ("validation", "test"):
        if split not in pairs:
            continue
        shared = sum(pair in taught for pair in zip(pairs[split]["source"], pairs[split]["target"], strict=True))
        if shared:
            log.warning(
                "%s split: %d of %d examples are also train examples (the same source and target): its scores "
                "count them. Remove repeated rows from the data to keep the splits apart.",
                split,
                shared,
                len(pairs[split]),
            )


class Seq2SeqDataModule(LightningDataModule):
    """Pairs of texts from local files, the package's embedded corpora or the HuggingFace Hub.

    Raw rows become examples through `pair_builder`: by default one per row from `source_field`/`target_field`;
    `weaver.data.dialogue.DialoguePairs` expands each conversation into (history, next turn) pairs.

    Heavy work (loading, cleaning, tokenizer training, tokenization) runs in `prepare_data` on one process
    and lands in caches (`datasets` fingerprints, the tokenizer cache); `setup` on every rank reads them back.

    `denoising` (`weaver.data.denoising.TextInfilling` or `SpanCorruption`) adds corrupted copies of the training
    sources to reconstruct next to the task's own training pairs; with a pair builder of unlabelled texts
    (`weaver.data.raw_text.RawText`, task=pretrain) every split's examples are corrupted texts instead, or for a
    decoder-only model (no denoising) each text whole, as the completion of a one-token prompt (causal LM).

    `prompt_template` (set by `model=hf_causal_lm`) lays examples out for a decoder-only model: each source inside
    the template, as a prompt padded on the left, and each target as its completion (`weaver.prompts`).

    Batches hold `batch_size` examples, or with `max_tokens` (`eval_max_tokens` for validation/test) as many
    length-sorted examples as fit `count * longest <= max_tokens` (see `weaver.data.batching`); an example's length
    is its longer side, or for a decoder-only model prompt and completion together (one row).

    `packing` (decoder-only models) packs the training examples into shared rows of `packing_row_length` tokens
    (default: the longest training example), `max_tokens // packing_row_length` rows a batch (`weaver.data.packing`).
    """

    def __init__(
        self,
        tokenizer: TokenizerSource,
        source_field: str | None = None,
        target_field: str | None = None,
        data_dir: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        dataset_name: str | None = None,
        dataset_config: str | None = None,
        validation_fraction: float = 0.05,
        test_fraction: float = 0.05,
        split_seed: int = 1234,
        train_fraction: float = 1.0,
        max_source_length: int = 128,
        max_target_length: int = 128,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        max_tokens: int | None = None,
        eval_max_tokens: int | None = None,
        num_workers: int = 0,
        source_prefix: str = "",
        cache_dir: str | None = None,
        pair_builder: PairBuilder | None = None,
        denoising: Corruption | None = None,
        prompt_template: str | None = None,
        packing: bool = False,
        packing_row_length: int | None = None,
        splits: Sequence[str] = SPLITS,
    ) -> None:
        super().__init__()
        positive = ("max_source_length", "max_target_length", "batch_size", "eval_batch_size", "packing_row_length")
        for name in (*positive, "max_tokens", "eval_max_tokens"):
            require_positive(name, locals()[name])
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}.")
        self.prompt = PromptTemplate(prompt_template) if prompt_template is not None else None
        self.unlabelled = getattr(pair_builder, "unlabelled", False)
        if self.unlabelled and self.prompt is not None and denoising is not None:
            raise ConfigError(
                "A decoder-only model pretrains on unlabelled text by predicting each next token of the whole text "
                "(its prompt is one start token): set denoising=none and data.max_source_length=1, e.g. "
                "python train.py task=pretrain model=gpt2_small_scratch denoising=none data.max_source_length=1 "
                "data.packing=true"
            )
        if self.unlabelled and self.prompt is None and denoising is None:
            raise ConfigError(
                "Unlabelled text (data=pretrain_text) needs an objective to make examples of it: set "
                "denoising=text_infilling or denoising=span_corruption."
            )
        if self.prompt is not None and denoising is not None:
            raise ConfigError(
                "data.denoising makes examples for encoder-decoder models; set data.denoising=null for a decoder-only "
                "model (model=hf_causal_lm)."
            )
        if packing and self.prompt is None:
            raise ConfigError(
                "data.packing=true packs prompts and completions of a decoder-only model into shared rows; an "
                "encoder-decoder reads sources and targets apart: use model=hf_causal_lm or set data.packing=false."
            )
        if packing and max_tokens is None:
            raise ConfigError("data.packing=true fills batches of data.max_tokens tokens: set data.max_tokens.")
        self.save_hyperparameters(ignore=["tokenizer", "pair_builder", "denoising", "splits"], logger=False)
        self.splits = tuple(splits)  # eval.py prepares the one it scores
        self.tokenizer_source = tokenizer
        self.pair_builder = pair_builder_for(pair_builder, source_field, target_field)
        self.custom_pairs = pair_builder is not None
        self.denoising = denoising
        self._pairs: DatasetDict | None = None
        # Digests of the rows of the splits carved from train: this run's, and those of the run a checkpoint holds.
        self.carved_digests: dict[str, str] = {}
        self.checkpoint_carved_digests: dict[str, str] = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self.datasets: DatasetDict | None = None
        self._lengths: dict[str, dict[str, np.ndarray]] = {}
        self._efficiency_logged = False
        self._truncation_logged: set[str] = set()

    # ---- stages -------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        self.tokenized_splits()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is None:
            self.datasets = self.tokenized_splits()
        if stage in (None, "fit") and not self._efficiency_logged and self.is_global_zero():
            self._efficiency_logged = True
            h = self.hparams
            sampler = self.batch_sampler("train", shuffle=True, num_replicas=1, rank=0)
            if isinstance(sampler, PackedBatchSampler):
                log.info(
                    "Train batches (%d per epoch, %d packed rows of up to %d tokens): padding efficiency %.1f%% "
                    "(real / padded tokens).",
                    len(sampler),
                    sampler.rows_per_batch,
                    sampler.row_length,
                    100 * sampler.row_efficiency(),
                )
                return
            batches = sampler.all_batches()
            efficiency = self.padding_efficiency("train", batches)
            batching = f"max_tokens={h.max_tokens}" if h.max_tokens else f"batch_size={h.batch_size}, random"
            log.info(
                "Train batches (%d per epoch, %s): padding efficiency source %.1f%%, target %.1f%% "
                "(real / padded tokens).",
                len(batches),
                batching,
                100 * efficiency["source"],
                100 * efficiency["target"],
            )

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """Trained (or loaded) on first use; the model's vocabulary comes from here."""
        if self._tokenizer is None:
            # Without a train split (eval.py on a file of its own), the tokenizer is the checkpoint's: given.
            train = self.pairs().get("train", Dataset.from_dict({"source": [], "target": []}))

            def texts() -> Iterator[list[str]]:
                for start in range(0, len(train), 1000):
                    rows = train[start : start + 1000]
                    yield rows["source"] + rows["target"]

            self.add_data_markers()
            self._tokenizer = self.tokenizer_source.build(texts, train._fingerprint, self.hparams.cache_dir)
            self.check_special_tokens(self._tokenizer)
        return self._tokenizer

    def add_data_markers(self) -> None:
        """The pair builder's markers (speaker, separator and topic tokens) and the denoising mask token join the
        special tokens of a tokenizer still to be trained or loaded, after the configured ones, so a data option
        that adds a marker needs no tokenizer override. A tokenizer given already (a checkpoint's) is left as it
        is."""
        configured = getattr(self.tokenizer_source, "extra_special_tokens", None)
        if configured is None:
            return
        markers = [*getattr(self.pair_builder, "special_tokens", ()), *getattr(self.denoising, "special_tokens", ())]
        missing = [token for token in markers if token not in configured]
        if missing:
            self.tokenizer_source.extra_special_tokens = [*configured, *missing]
            log.info("Data markers %s join tokenizer.extra_special_tokens.", missing)

    def check_special_tokens(self, tokenizer: PreTrainedTokenizerBase) -> None:
        for token in getattr(self.pair_builder, "special_tokens", ()):
            ids = tokenizer(token, add_special_tokens=False)["input_ids"]
            if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
                raise ConfigError(
                    f"The tokenizer splits the data marker '{token}' into {len(ids)} tokens: "
                    f"add it to tokenizer.extra_special_tokens."
                )

    def pairs(self) -> DatasetDict:
        """Every split as (example_id, source, target), bad rows skipped and counted."""
        if self._pairs is None:
            h = self.hparams
            raw = load_configured_splits(h, needed=self.splits)
            self.carved_digests = {split: rows_digest(raw[split]) for split in raw.carved}
            self._pairs = DatasetDict(
                {split: self.pair_builder.build_pairs(data, split) for split, data in raw.items()}
            )
            sizes = ", ".join(f"{split} {len(data)}" for split, data in self._pairs.items())
            log.info("Data: %s examples.", sizes)
            if self.is_global_zero():
                report_train_overlap(self._pairs)
        return self._pairs

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data: the digests of the splits carved from train (`check_carved`)."""
        self.pairs()
        return {"carved_splits": dict(self.carved_digests)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.checkpoint_carved_digests = dict(state.get("carved_splits", {}))

    def check_carved(self, split: str) -> None:
        """A split carved from train again, for the checkpoint's run (eval.py, a resume), holds the rows it did: a
        train file changed since would carve other rows, which that run may have trained on."""
        expected = self.checkpoint_carved_digests.get(split)
        if expected is None or split not in self.carved_digests or self.carved_digests[split] == expected:
            return
        raise DataError(
            f"The {split} split, carved from the train rows again, holds other rows than the checkpoint's run carved: "
            "the train data (or which splits have files of their own) differs from that run's, and these rows may "
            f"include some it trained on. Give the run's data as it was, or {split} rows of your own "
            f"(data.{split}_file=...)."
        )

    def tokenized_splits(self) -> DatasetDict:
        tokenizer, h = self.tokenizer, self.hparams
        recipe = f"{TOKENIZATION_VERSION}|{fingerprint_tokenizer(tokenizer)}|{h.max_source_length}|"
        recipe += f"{h.max_target_length}|{h.source_prefix}"
        if self.custom_pairs:
            recipe += f"|{self.pair_builder!r}"
        if self.prompt is not None:
            recipe += f"|{PROMPTS_VERSION}|{self.prompt!r}|{tokenizer.chat_template}"

        def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            if self.prompt is not None and self.unlabelled:  # causal LM: each text whole, after a start token
                count = len(batch["target"])
                return {
                    "input_ids": [PromptTemplate.text_start(tokenizer)] * count,
                    "labels": self.prompt.completions(tokenizer, batch["target"], h.max_target_length),
                    "source_truncated": [False] * count,
                }
            encoded = self.pair_builder.encode_sources(tokenizer, batch, h.max_source_length, h.source_prefix)
            if self.prompt is None:
                encoded.pop("source_text", None)  # what a prompt would render, not a column to keep
                labels = tokenizer(text_target=batch["target"], max_length=h.max_target_length, truncation=True)
                return {**encoded, "labels": labels["input_ids"]}
            prompts = self.prompt.prompts(tokenizer, encoded, self.pair_builder, h.max_source_length)
            encoded.pop("source_text", None)
            completions = self.prompt.completions(tokenizer, batch["target"], h.max_target_length)
            for positions in ("relevant_spans", "ignored_spans"):  # a prompt lays the source's tokens out anew
                encoded.pop(positions, None)
            return {**encoded, "input_ids": prompts, "labels": completions}

        splits = {}
        for split, data in self.pairs().items():
            fingerprint = hashlib.sha256(f"{data._fingerprint}|{recipe}".encode()).hexdigest()[:16]
            splits[split] = data.map(tokenize, batched=True, new_fingerprint=fingerprint, desc=f"Tokenizing {split}")
            truncated = sum(splits[split]["source_truncated"])
            if truncated and fingerprint not in self._truncation_logged:  # prepare_data and setup both tokenize
                self._truncation_logged.add(fingerprint)
                log.info(
                    "%s split: %d of %d sources truncated to max_source_length=%d.",
                    split,
                    truncated,
                    len(data),
                    h.max_source_length,
                )
        if self.denoising is not None:
            length = self.denoising.text_length(h.max_source_length, h.max_target_length)
            if self.unlabelled:  # the objective is the task (task=pretrain): every split's examples
                splits = {name: self.denoising.examples(data, tokenizer, length, name) for name, data in splits.items()}
            elif "train" in splits:
                first_id = int(max(splits["train"]["example_id"], default=-1)) + 1
                if "relevant_spans" in splits["train"].column_names:  # corrupted copies have no relevant span
                    splits["train"] = splits["train"].remove_columns(["relevant_spans", "ignored_spans"])
                noised = self.denoising.examples(splits["train"], tokenizer, length, "train", first_id)
                splits["train"] = concatenate_datasets([splits["train"], noised])
        return DatasetDict(splits)

    # ---- batching -----------------------------------------------------------------------------------------

    def is_global_zero(self) -> bool:
        return self.trainer is None or self.trainer.is_global_zero

    def sharded_model(self) -> bool:
        return self.trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy)

    def lengths(self, split: str) -> dict[str, np.ndarray]:
        """Token counts per example of `split`: {"source": input_ids, "target": labels}, computed once."""
        if split not in self._lengths:
            if self.datasets is None:
                self.setup()
            data = self.datasets[split]
            self._lengths[split] = {
                "source": column_lengths(data, "input_ids"),
                "target": column_lengths(data, "labels"),
            }
        return self._lengths[split]

    def batch_size(self, split: str) -> int:
        h = self.hparams
        return h.batch_size if split == "train" else (h.eval_batch_size or h.batch_size)

    def max_tokens(self, split: str) -> int | None:
        return self.hparams.max_tokens if split == "train" else self.hparams.eval_max_tokens

    def shuffle_seed(self) -> int:
        """`seed_everything`'s seed (as Lightning's own DistributedSampler takes it), else `split_seed`."""
        return int(os.environ.get("PL_GLOBAL_SEED", self.hparams.split_seed))

    def batch_sampler(
        self, split: str, shuffle: bool, num_replicas: int | None = None, rank: int | None = None
    ) -> EpochBatchSampler:
        """Batches of `split` for replica `rank` of `num_replicas` (default: torch.distributed's when initialised,
        else all of them): token-budget batches when `max_tokens` is set for the split, else fixed-size ones.
        Training replicas take equal numbers of batches; so do evaluation replicas of a sharded (FSDP) model, whose
        forwards every rank must run together; other evaluation replicas never see an example twice."""
        lengths = self.lengths(split)
        replica = {"shuffle": shuffle, "seed": self.shuffle_seed(), "num_replicas": num_replicas, "rank": rank}
        replica["even"] = split == "train" or self.sharded_model()
        if not self.max_tokens(split):
            return FixedSizeBatchSampler(len(lengths["source"]), self.batch_size(split), **replica)
        if split == "train" and self.hparams.packing:
            return self.packed_batch_sampler(lengths["source"] + lengths["target"], replica)
        # A decoder-only model reads prompt and completion as one row.
        combine = np.add if self.prompt is not None else np.maximum
        return TokenBudgetBatchSampler(
            lengths=combine(lengths["source"], lengths["target"]),
            max_tokens=self.max_tokens(split),
            tie_lengths=lengths["source"] + lengths["target"],
            **replica,
        )

    def packed_batch_sampler(self, lengths: np.ndarray, replica: dict[str, Any]) -> PackedBatchSampler:
        """`data.packing`: rows of `packing_row_length` tokens (default: the longest example), as many a batch as
        `max_tokens` holds."""
        h = self.hparams
        row_length = h.packing_row_length or int(lengths.max())
        if row_length > h.max_tokens:
            raise ConfigError(
                f"data.max_tokens={h.max_tokens} cannot hold one packed row of {row_length} tokens: raise it, or lower "
                "data.packing_row_length."
            )
        longer = int((lengths > row_length).sum())
        if longer and self.is_global_zero():
            log.warning(
                "train split: %d examples are longer than data.packing_row_length=%d; each fills a row of its own.",
                longer,
                row_length,
            )
        return PackedBatchSampler(lengths, row_length, h.max_tokens // row_length, **replica)

    def batches(self, split: str, shuffle: bool | None = None) -> list[list[int]]:
        """One epoch's batches of `split` over all ranks, as the loaders form them. `shuffle` defaults to train
        only."""
        shuffle = split == "train" if shuffle is None else shuffle
        return self.batch_sampler(split, shuffle, num_replicas=1, rank=0).all_batches()

    def lowest_ids_read(self, split: str, count: int, batches_per_rank: float) -> set[int]:
        """The `count` lowest example ids among those an unshuffled pass over `split` reads when each rank stops
        after `batches_per_rank` batches (Lightning's `limit_val_batches`): rank r reads every world-size-th batch
        from r, so all ranks together read the epoch's first `batches_per_rank * world size` batches."""
        batches = self.batches(split, shuffle=False)
        if math.isfinite(batches_per_rank):
            world_size = self.trainer.world_size if self.trainer is not None else 1
            batches = batches[: int(batches_per_rank) * world_size]
        positions = [position for batch in batches for position in batch]
        ids = np.asarray(self.datasets[split]["example_id"])[positions]
        return set(np.sort(ids)[:count].tolist())

    def padding_efficiency(self, split: str = "train", batches: list[list[int]] | None = None) -> dict[str, float]:
        """Real / padded tokens per side ("source", "target") of `batches`, by default one epoch's."""
        batches = self.batches(split) if batches is None else batches
        return {side: padding_efficiency(batches, values) for side, values in self.lengths(split).items()}

    # ---- loaders ------------------------------------------------------------------------------------------

    def dataloader(self, split: str, shuffle: bool) -> DataLoader:
        if self.datasets is None:
            self.setup()
        self.check_carved(split)
        h = self.hparams
        dataset: Dataset | PackedRows = self.datasets[split].remove_columns("source_truncated")
        trainer = self.trainer
        collator = Seq2SeqCollator(self.tokenizer.pad_token_id, left_pad_sources=self.prompt is not None)
        if split == "train" and h.packing:
            dataset, collator = PackedRows(dataset), PackedCollator(self.tokenizer.pad_token_id)
        loading = {
            "collate_fn": collator,
            "num_workers": h.num_workers,
            "persistent_workers": h.num_workers > 0,
            # Page-locked batches copy to a GPU asynchronously (Lightning moves them with non_blocking=True).
            "pin_memory": trainer is not None and trainer.strategy.root_device.type == "cuda",
        }
        # A BatchSampler subclass built inside a *_dataloader hook: under a distributed strategy Lightning
        # re-instantiates it with a DistributedSampler, whose replica count and rank match these.
        sampler = self.batch_sampler(
            split,
            shuffle,
            num_replicas=trainer.world_size if trainer is not None else None,
            rank=trainer.global_rank if trainer is not None else None,
        )
        oversized = getattr(sampler, "oversized", 0)
        if oversized:
            key, longest = f"data.{'' if split == 'train' else 'eval_'}max_tokens", int(sampler.lengths.max())
            if oversized == len(sampler.lengths):
                raise ConfigError(
                    f"{key}={sampler.max_tokens} is below the length of every {split} example (the longest has "
                    f"{longest} tokens), so each would be a batch of one: set {key} to at least {longest}."
                )
            if self.is_global_zero():
                log.warning(
                    "%s split: %d examples are longer than %s=%d (the longest has %d tokens); each forms a batch of "
                    "its own.",
                    split,
                    oversized,
                    key,
                    sampler.max_tokens,
                    longest,
                )
        # Training resumes mid-epoch from a checkpoint at the very batch it stopped at. Each epoch's iterator draws a
        # seed from the loader's generator, not from the global one: a run resumed at an epoch's end restores the
        # global generator (dropout) only after opening the next epoch, where an uninterrupted run drew before it.
        if split == "train":
            generator = torch.Generator().manual_seed(self.shuffle_seed())
            return ResumableDataLoader(dataset, batch_sampler=sampler, generator=generator, **loading)
        return DataLoader(dataset, batch_sampler=sampler, **loading)

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test", shuffle=False)
