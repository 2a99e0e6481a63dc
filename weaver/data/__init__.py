"""Data: sources and column mapping, tokenizers, batching, and the LightningDataModule that ties them."""

from weaver.data.datamodule import Seq2SeqDataModule
from weaver.data.tokenizer import GivenTokenizer, PretrainedTokenizer, TrainedTokenizer

__all__ = ["GivenTokenizer", "PretrainedTokenizer", "Seq2SeqDataModule", "TrainedTokenizer"]
