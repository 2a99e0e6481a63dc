"""Models: the native Weaver encoder-decoder Transformer, HuggingFace seq2seq and decoder-only backbones, and
parameter-efficient fine-tuning methods."""

from weaver.models.adapters import (
    IA3,
    AdaLoRA,
    BottleneckAdapter,
    LoRA,
    PrefixTuning,
    PromptTuning,
    can_merge,
    merge_adapters,
    peft_model_of,
)
from weaver.models.causal_lm import CausalLM, build_causal_lm
from weaver.models.pretrained import HFBackbone, PretrainedSeq2Seq, build_pretrained_seq2seq
from weaver.models.weaver import DecoderCache, WeaverConfig, WeaverModel, build_weaver, load_weaver

__all__ = [
    "IA3",
    "AdaLoRA",
    "BottleneckAdapter",
    "CausalLM",
    "DecoderCache",
    "HFBackbone",
    "LoRA",
    "PrefixTuning",
    "PromptTuning",
    "PretrainedSeq2Seq",
    "WeaverConfig",
    "WeaverModel",
    "build_causal_lm",
    "build_pretrained_seq2seq",
    "build_weaver",
    "can_merge",
    "load_weaver",
    "merge_adapters",
    "peft_model_of",
]
