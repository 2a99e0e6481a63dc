"""Tiny randomly initialised T5, BART, Marian, GPT-2 and Llama models saved with their tokenizers, as a Hub folder
would be.

Each tokenizer is a small byte-level BPE trained on the embedded corpus with the family's special tokens at the
family's ids (T5: pad 0, eos 1; BART: <s> 0, pad 1, </s> 2; Marian: eos 0, pad last; GPT-2: <|endoftext|> as BOS
and EOS, no pad; Llama: <unk> 0, <s> 1, </s> 2, BOS added, no pad), so the model configs, `decoder_start_token_id`
included, are the real ones of each family.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MarianConfig,
    MarianMTModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from tests.conftest import embedded_rows

FAMILIES = ("t5", "bart", "marian")
CAUSAL_FAMILIES = ("gpt2", "llama")
VOCAB_SIZE = 300
TINY = {"d_model": 64, "heads": 2, "layers": 2, "ffn": 128}


def train_tokenizer(special: list[str], vocab_size: int) -> Tokenizer:
    rows = embedded_rows("ddtp_en_de", "train", 300)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([row["en"] for row in rows] + [row["de"] for row in rows], trainer=trainer)
    return tokenizer


def fast_tokenizer(family: str) -> PreTrainedTokenizerFast:
    if family == "gpt2":
        tokenizer = train_tokenizer(["<|endoftext|>"], VOCAB_SIZE)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        endoftext = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **endoftext)
    if family == "llama":
        tokenizer = train_tokenizer(["<unk>", "<s>", "</s>"], VOCAB_SIZE)
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    specials = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    if family == "t5":
        tokenizer = train_tokenizer(["<pad>", "</s>", "<unk>"], VOCAB_SIZE)
        tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)
    if family == "bart":
        tokenizer = train_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], VOCAB_SIZE)
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", **specials)
    tokenizer = train_tokenizer(["</s>", "<unk>"], VOCAB_SIZE - 1)
    tokenizer.add_special_tokens(["<pad>"])  # Marian: pad is the last id, and the decoder start
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)


def tiny_model(family: str, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    vocab, d, heads, layers, ffn = len(tokenizer), TINY["d_model"], TINY["heads"], TINY["layers"], TINY["ffn"]
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab, n_embd=d, n_layer=layers, n_head=heads, n_inner=ffn, n_positions=128, **ids
        )
        return GPT2LMHeadModel(config)
    if family == "llama":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=d,
            intermediate_size=ffn,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=128,
            **ids,
        )
        return LlamaForCausalLM(config)
    if family == "t5":
        config = T5Config(
            vocab_size=vocab,
            d_model=d,
            d_kv=d // heads,
            d_ff=ffn,
            num_layers=layers,
            num_heads=heads,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
        return T5ForConditionalGeneration(config)
    shared = {
        "vocab_size": vocab,
        "d_model": d,
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": ffn,
        "decoder_ffn_dim": ffn,
        "max_position_embeddings": 128,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if family == "bart":
        config = BartConfig(**shared, bos_token_id=0, decoder_start_token_id=2, forced_eos_token_id=2)
        return BartForConditionalGeneration(config)
    config = MarianConfig(**shared, decoder_start_token_id=tokenizer.pad_token_id)
    return MarianMTModel(config)


def save_tiny_model(family: str, folder: Path, seed: int = 0) -> Path:
    """A tiny `family` model and its tokenizer saved in `folder` with `save_pretrained`."""
    torch.manual_seed(seed)
    tokenizer = fast_tokenizer(family)
    model = tiny_model(family, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
