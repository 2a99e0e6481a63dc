"""The LightningDataModule every task trains on: raw splits -> (source, target) pairs -> token ids -> batches."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from datasets import Dataset, DatasetDict
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from weaver.data.collate import Seq2SeqCollator
from weaver.data.columns import select_pairs
from weaver.data.sources import SPLITS, load_splits
from weaver.data.tokenizer import TextBatches, fingerprint_tokenizer
from weaver.errors import ConfigError

log = logging.getLogger(__name__)

# Bump when tokenization changes, so cached tokenized datasets are not reused.
TOKENIZATION_VERSION = "1"


class TokenizerSource(Protocol):
    def build(self, texts: TextBatches, data_fingerprint: str, cache_dir: str | None) -> PreTrainedTokenizerBase:
        ...


def require_positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value <= 0):
        raise ConfigError(f"data.{name} must be a positive integer, got {value!r}.")


class Seq2SeqDataModule(LightningDataModule):
    """Pairs of texts from local files, the package's embedded corpora or the HuggingFace Hub.

    Heavy work (loading, cleaning, tokenizer training, tokenization) runs in `prepare_data` on one process
    and lands in caches (`datasets` fingerprints, the tokenizer cache); `setup` on every rank reads them back.
    """

    def __init__(
        self,
        tokenizer: TokenizerSource,
        source_field: str,
        target_field: str,
        data_dir: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        dataset_name: str | None = None,
        dataset_config: str | None = None,
        validation_fraction: float = 0.05,
        test_fraction: float = 0.05,
        split_seed: int = 1234,
        max_source_length: int = 128,
        max_target_length: int = 128,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        source_prefix: str = "",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        for name in ("max_source_length", "max_target_length", "batch_size", "eval_batch_size"):
            require_positive(name, locals()[name])
        if num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {num_workers}.")
        self.save_hyperparameters(ignore=["tokenizer"], logger=False)
        self.tokenizer_source = tokenizer
        self._pairs: DatasetDict | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self.datasets: DatasetDict | None = None

    # ---- stages -------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        self.tokenized_splits()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is None:
            self.datasets = self.tokenized_splits()

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """Trained (or loaded) on first use; the model's vocabulary comes from here."""
        if self._tokenizer is None:
            train = self.pairs()["train"]

            def texts() -> Iterator[list[str]]:
                for start in range(0, len(train), 1000):
                    rows = train[start : start + 1000]
                    yield rows["source"] + rows["target"]

            self._tokenizer = self.tokenizer_source.build(texts, train._fingerprint, self.hparams.cache_dir)
        return self._tokenizer

    def pairs(self) -> DatasetDict:
        """Every split as (example_id, source, target), bad rows skipped and counted."""
        if self._pairs is None:
            h = self.hparams
            raw = load_splits(
                data_dir=h.data_dir,
                train_file=h.train_file,
                validation_file=h.validation_file,
                test_file=h.test_file,
                dataset_name=h.dataset_name,
                dataset_config=h.dataset_config,
                validation_fraction=h.validation_fraction,
                test_fraction=h.test_fraction,
                split_seed=h.split_seed,
            )
            self._pairs = DatasetDict(
                {split: select_pairs(raw[split], split, h.source_field, h.target_field) for split in SPLITS}
            )
            sizes = ", ".join(f"{split} {len(self._pairs[split])}" for split in SPLITS)
            log.info("Data: %s examples.", sizes)
        return self._pairs

    def tokenized_splits(self) -> DatasetDict:
        tokenizer, h = self.tokenizer, self.hparams
        recipe = f"{TOKENIZATION_VERSION}|{fingerprint_tokenizer(tokenizer)}|{h.max_source_length}|"
        recipe += f"{h.max_target_length}|{h.source_prefix}"

        def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            sources = [h.source_prefix + text for text in batch["source"]]
            inputs = tokenizer(sources, max_length=h.max_source_length, truncation=True)
            labels = tokenizer(text_target=batch["target"], max_length=h.max_target_length, truncation=True)
            return {
                "input_ids": inputs["input_ids"],
                "labels": labels["input_ids"],
                "source_truncated": [bool(e.overflowing) for e in inputs.encodings],
            }

        splits = {}
        for split, data in self.pairs().items():
            fingerprint = hashlib.sha256(f"{data._fingerprint}|{recipe}".encode()).hexdigest()[:16]
            splits[split] = data.map(
                tokenize, batched=True, new_fingerprint=fingerprint, desc=f"Tokenizing {split}"
            )
            truncated = sum(splits[split]["source_truncated"])
            if truncated:
                log.info(
                    "%s split: %d of %d sources truncated to max_source_length=%d.",
                    split, truncated, len(data), h.max_source_length,
                )
        return DatasetDict(splits)

    # ---- loaders ------------------------------------------------------------------------------------------

    def dataloader(self, split: str, shuffle: bool) -> DataLoader:
        if self.datasets is None:
            self.setup()
        h = self.hparams
        dataset: Dataset = self.datasets[split].remove_columns("source_truncated")
        return DataLoader(
            dataset,
            batch_size=h.batch_size if split == "train" else (h.eval_batch_size or h.batch_size),
            shuffle=shuffle,
            collate_fn=Seq2SeqCollator(self.tokenizer.pad_token_id),
            num_workers=h.num_workers,
            persistent_workers=h.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test", shuffle=False)
