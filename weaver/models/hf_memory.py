"""Memory and recall for HuggingFace encoder-decoders (BART, mBART, Marian, Pegasus, T5 families).

The encoder reads a long source in windows through `weaver.models.memory`, and the decoder's cross-attention
modules recall top-k entries through `weaver.models.recall`: they are dispatched, like every attention module of
a `transformers` model, through its attention interface, here one registered as `weaver_recall` that recalls in
the cross-attention modules marked with their memory settings and runs SDPA everywhere else.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from weaver.errors import ConfigError
from weaver.models.memory import MemoryConfig
from weaver.models.recall import recall_attention

ATTENTION = "weaver_recall"
RECALL_SETTINGS = "weaver_recall"  # the attribute marking a cross-attention module, holding its MemoryConfig
# Cross-attention modules by family: BART-style decoders (BART, mBART, Marian, Pegasus) and T5-style ones.
CROSS_ATTENTION_NAMES = ("encoder_attn", "EncDecAttention")


def recalling_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_bias: Tensor | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """A `transformers` attention function: top-k recall in marked cross-attention modules, SDPA elsewhere (and
    in training under `memory.training=full`). Masks come as SDPA's (boolean, True where attending)."""
    memory: MemoryConfig | None = getattr(module, RECALL_SETTINGS, None)
    if memory is None or (module.training and memory.training == "full"):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, position_bias=position_bias, **kwargs
        )
    output = recall_attention(query, key, value, attention_mask, memory.top_k, dropout, scaling, position_bias)
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, recalling_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def enable_recall(backbone: PreTrainedModel, memory: MemoryConfig, position_limit: int | None) -> None:
    """Mark ``backbone``'s cross-attention modules with ``memory`` and dispatch its attention through recall;
    a window must fit the positions of a model with learned ones (``position_limit``)."""
    if memory.fold_keys:
        raise ConfigError(
            "model.memory.fold_keys=true is for the native model: a HuggingFace backbone's cross-attention caches "
            "its own keys and values; set model.memory.fold_keys=false"
        )
    if position_limit is not None:
        memory.check_positions(position_limit, key="the model's max_position_embeddings")
    marked = 0
    for name, module in backbone.named_modules():
        if name.rsplit(".", 1)[-1] in CROSS_ATTENTION_NAMES:
            setattr(module, RECALL_SETTINGS, memory)
            marked += 1
    if not marked:
        raise ConfigError(
            f"model.memory: the {backbone.config.model_type} model has no cross-attention modules recall knows "
            f"({', '.join(CROSS_ATTENTION_NAMES)}); use memory=none"
        )
    backbone.set_attn_implementation(ATTENTION)
