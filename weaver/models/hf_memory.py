"""Memory and recall for HuggingFace encoder-decoders (BART, mBART, Marian, Pegasus, T5 families).

The encoder reads a long source in windows through `weaver.models.memory`, and the decoder's cross-attention
modules recall top-k entries through `weaver.models.recall`: they are dispatched, like every attention module of
a `transformers` model, through its attention interface, here one registered as `weaver_recall` that recalls in
the cross-attention modules marked with their memory settings and runs SDPA everywhere else. In beam search a
source's beams share its memory (`beam_shared_memory`), as the native model's do.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, DynamicCache, EncoderDecoderCache, PreTrainedModel
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
    beams = query.size(0) // key.size(0)  # > 1 where a source's beams share its memory (`beam_shared_memory`)
    if beams > 1:
        query, attention_mask, position_bias = beams_as_one_source(query, attention_mask, position_bias, beams)
    output = recall_attention(query, key, value, attention_mask, memory.top_k, dropout, scaling, position_bias)
    if beams > 1:  # (B, H, beams * T, d) -> (B * beams, H, T, d)
        output = output.unflatten(2, (beams, -1)).transpose(1, 2).flatten(0, 1)
    return output.transpose(1, 2).contiguous(), None


def beams_as_one_source(
    query: Tensor, mask: Tensor | None, bias: Tensor | None, beams: int
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Queries (B * beams, H, T, d) of consecutive beams as (B, H, beams * T, d), one row per source as its memory
    has; a cross-attention mask is the same for every query of a source, so one row of it serves them all."""
    if mask is not None:
        mask = (mask[::beams] if mask.size(0) == query.size(0) else mask)[:, :, :1]
    query = query.unflatten(0, (-1, beams)).transpose(1, 2).flatten(2, 3)
    if bias is not None:
        bias = (
            bias.unflatten(0, (-1, beams)).transpose(1, 2).flatten(2, 3)
            if bias.size(0) > 1
            else bias.repeat(1, 1, beams, 1)
        )
    return query, mask, bias


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
    if getattr(backbone.config, "num_experts", None):
        raise ConfigError(
            f"model.memory: the {backbone.config.model_type} model is a mixture of experts whose decoder takes its "
            "encoder's routing of one whole pass, which windows do not give; use memory=none"
        )
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
    backbone.set_attn_implementation(ATTENTION)  # a model that cannot switch only logs so, and attends in full
    if backbone.config._attn_implementation != ATTENTION:
        raise ConfigError(
            f"model.memory: the {backbone.config.model_type} model's attention cannot be replaced by recall "
            "(transformers runs its own attention code for it); use memory=none, or a BART, T5 or Marian family model"
        )


class BeamSharedCache(EncoderDecoderCache):
    """A decoding cache whose cross-attention keys and values keep one row per source: beam search reorders only the
    decoder's own keys and values, since a source's beams always read the same memory."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


@contextmanager
def beam_shared_memory(backbone: PreTrainedModel) -> Iterator[dict[str, Any]]:
    """Within it, `backbone.generate(**kwargs, encoder_outputs=...)` with the given cache keeps the encoder outputs
    (the memory) and their attention mask one row per source instead of repeating them per beam, so the
    cross-attention keys and values are computed and stored once per source; recall broadcasts each source's beams
    over them (`beams_as_one_source`). ``backbone`` may be wrapped by `peft`."""
    model = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    expand = model._expand_inputs_for_generation

    def expand_all_but_memory(
        expand_size: int = 1, is_encoder_decoder: bool = False, input_ids: Tensor | None = None, **model_kwargs: Any
    ) -> tuple[Tensor | None, dict[str, Any]]:
        memory = {key: model_kwargs.pop(key) for key in ("encoder_outputs", "attention_mask")}
        # Without the encoder outputs, `generate`'s own expansion has nothing encoder-decoder left to repeat.
        input_ids, model_kwargs = expand(expand_size=expand_size, input_ids=input_ids, **model_kwargs)
        return input_ids, {**model_kwargs, **memory}

    model._expand_inputs_for_generation = expand_all_but_memory
    try:
        # The cache argument's name: `cache` in recent `transformers`, `past_key_values` before it.
        name = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
        yield {name: BeamSharedCache(DynamicCache(), DynamicCache())}
    finally:
        del model._expand_inputs_for_generation
