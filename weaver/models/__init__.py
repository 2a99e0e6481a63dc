"""Models: the native Weaver encoder-decoder Transformer, and HuggingFace pretrained seq2seq backbones."""

from weaver.models.lora import LoRA, merge_adapters, peft_model_of
from weaver.models.pretrained import PretrainedSeq2Seq, build_pretrained_seq2seq
from weaver.models.weaver import DecoderCache, WeaverConfig, WeaverModel, build_weaver, load_weaver

__all__ = [
    "DecoderCache",
    "LoRA",
    "PretrainedSeq2Seq",
    "WeaverConfig",
    "WeaverModel",
    "build_pretrained_seq2seq",
    "build_weaver",
    "load_weaver",
    "merge_adapters",
    "peft_model_of",
]
