"""Cross-attention weights as a model applies them, recomputed from each cross-attention module's own projections
while a teacher-forced forward runs, so no model needs code of its own to expose them.

Read through forward hooks: the native `CrossAttention`, and the BART-style (`encoder_attn`: BART, mBART, Marian,
Pegasus) and T5-style (`EncDecAttention`) modules of `transformers`. With memory, each query's `top_k` entries are
chosen as `weaver.models.recall` chooses them and kept as (indices, weights): never a row as long as the memory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch import Tensor, nn

from weaver.models.hf_memory import CROSS_ATTENTION_NAMES
from weaver.models.memory import MemoryConfig
from weaver.models.pretrained import PretrainedSeq2Seq
from weaver.models.recall import affine_parameters
from weaver.models.weaver import CrossAttention, WeaverModel


@dataclass
class CrossAttentionReader:
    """What recomputing one module's attention needs: its query and key projections and where its inputs are."""

    module: nn.Module
    query: Callable[[Tensor], Tensor]  # decoder states (B, T, D) -> (B, T, H * d)
    key: Callable[[Tensor], Tensor]  # source states (B, S, D) -> (B, S, H * d)
    num_heads: int
    scale: float
    query_argument: str  # names of the decoder states and the source states in `module.forward`
    source_argument: str
    # Folded recall (`memory.fold_keys`) ranks raw states against W_k^T q, as the model does: (q, states) -> scores.
    ranking: Callable[[Tensor, Tensor], Tensor] | None = None


@dataclass
class RecordedAttention:
    """One module's weights for a batch: dense (B, H, T, S) with ``indices`` None, or with recall (B, H, T, K)
    beside the memory ``indices`` (B, H, T, K) they belong to, heaviest first."""

    weights: Tensor
    indices: Tensor | None = None


def base_model(model: nn.Module) -> nn.Module:
    """The native model inside LoRA's `PeftModel` wrapper (a `PretrainedSeq2Seq` keeps its class under LoRA)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def reads_a_source(model: nn.Module) -> bool:
    """Whether ``model`` is an encoder-decoder, whose outputs can be traced back to source tokens (decoder-only
    backbones read prompt and output as one sequence)."""
    return isinstance(base_model(model), WeaverModel | PretrainedSeq2Seq)


def recall_settings(model: nn.Module) -> MemoryConfig | None:
    """The memory settings under which ``model`` (in eval mode) recalls top-k entries, or None."""
    model = base_model(model)
    return model.recall if isinstance(model, WeaverModel) else getattr(model, "memory", None)


def _native_reader(module: CrossAttention, memory: MemoryConfig | None) -> CrossAttentionReader:
    heads = module.num_heads
    width = module.q.out_features // heads
    ranking = None
    if memory is not None and memory.fold_keys:

        def ranking(q: Tensor, states: Tensor) -> Tensor:
            key_weight = affine_parameters(module.kv, states.size(-1))[0].chunk(2)[0].view(heads, width, -1)
            folded = q @ key_weight.to(q.dtype)  # (B, H, T, D): W_k^T q per head
            return (folded.flatten(1, 2) @ states.transpose(1, 2).to(folded.dtype)).float().view(*q.shape[:3], -1)

    return CrossAttentionReader(
        module=module,
        query=module.q,
        key=lambda states: module.kv(states).chunk(2, dim=-1)[0],
        num_heads=heads,
        scale=width**-0.5,
        query_argument="x",
        source_argument="memory",
        ranking=ranking,
    )


def _hf_reader(module: nn.Module) -> CrossAttentionReader:
    if hasattr(module, "q_proj"):  # BART family
        query, key, heads = module.q_proj, module.k_proj, module.num_heads
    else:  # T5 family: no scaling of the scores
        query, key, heads = module.q, module.k, module.n_heads
    return CrossAttentionReader(module, query, key, heads, module.scaling, "hidden_states", "key_value_states")


def cross_attention_readers(model: nn.Module) -> list[CrossAttentionReader]:
    """One reader per decoder layer, in layer order."""
    inner = base_model(model)
    if isinstance(inner, WeaverModel):
        memory = recall_settings(inner)
        return [_native_reader(layer.cross_attn, memory) for layer in inner.decoder_layers]
    if isinstance(inner, PretrainedSeq2Seq):
        modules = inner.backbone.get_decoder().named_modules()
        return [_hf_reader(module) for name, module in modules if name.rsplit(".", 1)[-1] in CROSS_ATTENTION_NAMES]
    raise TypeError(f"no cross-attention reader for a {type(inner).__name__}")


def _heads(reader: CrossAttentionReader, x: Tensor) -> Tensor:  # (B, L, H * d) -> (B, H, L, d)
    return x.unflatten(-1, (reader.num_heads, -1)).transpose(1, 2)


def _scores(reader: CrossAttentionReader, q: Tensor, source_states: Tensor, source_mask: Tensor) -> Tensor:
    """The module's float32 attention scores (B, H, T, S) of queries ``q`` (B, H, T, d) over the whole source,
    -inf off ``source_mask``."""
    k = _heads(reader, reader.key(source_states))
    blocked = ~source_mask.bool()[:, None, None, :]
    return ((q @ k.transpose(-1, -2)).float() * reader.scale).masked_fill(blocked, float("-inf"))


def attention_weights(
    reader: CrossAttentionReader,
    decoder_states: Tensor,
    source_states: Tensor,
    source_mask: Tensor,
    memory: MemoryConfig | None,
) -> RecordedAttention:
    """The module's softmax weights; with ``memory``, over each query's `top_k` best entries only."""

    q = _heads(reader, reader.query(decoder_states))
    scores = _scores(reader, q, source_states, source_mask)
    if memory is None:
        return RecordedAttention(scores.softmax(-1))
    blocked = ~source_mask.bool()[:, None, None, :]
    ranking = scores if reader.ranking is None else reader.ranking(q, source_states).masked_fill(blocked, float("-inf"))
    indices = ranking.topk(min(memory.top_k, scores.size(-1)), dim=-1).indices
    weights = scores.gather(-1, indices).softmax(-1)
    order = weights.argsort(-1, descending=True)
    return RecordedAttention(weights.gather(-1, order), indices.gather(-1, order))


@contextmanager
def _hooked_cross_attention(
    model: nn.Module, layers: list[int] | None, record: Callable[[CrossAttentionReader, Tensor, Tensor], None]
) -> Iterator[None]:
    """While open, each forward of a decoder layer in ``layers`` (None: every one) calls ``record(reader,
    decoder_states, source_states)`` with its cross-attention module's inputs."""
    readers = cross_attention_readers(model)
    layers = list(range(len(readers))) if layers is None else layers

    def hook_for(reader: CrossAttentionReader) -> Callable[..., None]:
        signature = inspect.signature(reader.module.forward)

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            arguments = signature.bind(*args, **kwargs).arguments
            record(reader, arguments[reader.query_argument], arguments[reader.source_argument])

        return hook

    handles = [readers[i].module.register_forward_hook(hook_for(readers[i]), with_kwargs=True) for i in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def recorded_cross_attention(
    model: nn.Module, layers: list[int], source_mask: Tensor
) -> Iterator[list[RecordedAttention]]:
    """While open, each forward of ``model`` appends the recomputed weights of decoder ``layers`` (in that order)
    to the yielded list; ``source_mask`` (B, S) is True on the source's real tokens."""
    memory = recall_settings(model)
    recorded: list[RecordedAttention] = []

    def record(reader: CrossAttentionReader, decoder_states: Tensor, source_states: Tensor) -> None:
        recorded.append(attention_weights(reader, decoder_states, source_states, source_mask, memory))

    with torch.no_grad(), _hooked_cross_attention(model, layers, record):
        yield recorded


def source_width(model: nn.Module) -> int:
    """The width D of the source states (B, S, D) the decoder's cross-attention reads."""
    inner = base_model(model)
    return inner.config.d_model if isinstance(inner, WeaverModel) else inner.backbone.config.d_model


@contextmanager
def read_source_states(model: nn.Module) -> Iterator[list[Tensor]]:
    """While open, each forward of ``model`` appends the source states (B, S, D) its first decoder layer's
    cross-attention reads (the encoder's output; with memory, every window's entries), with their gradients: for
    a loss on what the encoder writes there (`task.relevance_tagging_weight`)."""
    states: list[Tensor] = []

    def record(reader: CrossAttentionReader, decoder_states: Tensor, source_states: Tensor) -> None:
        states.append(source_states)

    with _hooked_cross_attention(model, [0], record):
        yield states


@contextmanager
def cross_attention_scores(model: nn.Module, source_mask: Tensor) -> Iterator[list[Tensor]]:
    """While open, each forward of ``model`` appends every decoder layer's cross-attention scores (B, H, T, S)
    over the whole source, before any top-k, to the yielded list, with their gradients: for a loss on where the
    decoder looks (`weaver.tasks.loss.relevance_loss`). Not for long sources: each is a dense (T, S) per head."""
    scores: list[Tensor] = []

    def record(reader: CrossAttentionReader, decoder_states: Tensor, source_states: Tensor) -> None:
        scores.append(_scores(reader, _heads(reader, reader.query(decoder_states)), source_states, source_mask))

    with _hooked_cross_attention(model, None, record):
        yield scores
