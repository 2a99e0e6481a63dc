"""The native Weaver encoder-decoder Transformer, in one file.

Pre-norm Transformer (Vaswani et al. 2017, with LayerNorm before each sub-layer and a final
LayerNorm on encoder and decoder outputs), GELU feed-forward, one token embedding shared by
encoder, decoder and output projection, and attention through `weaver.models.kernels` (SDPA's fused kernels, and
faster paths for the CPU). With `memory` (`weaver.models.memory`), a source of any length is encoded in overlapping
windows and each decoder query recalls only its best-scoring memory entries (`weaver.models.recall`); with
`query_match` (`weaver.models.query_match`), source tokens that repeat the source's query are marked in the embedding.

Shapes: B batch, S source length, T target length, D d_model, H heads, V vocabulary.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_FILE
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerBase

from weaver.errors import ConfigError, dataclass_values
from weaver.generation import GenerationConfig
from weaver.generation import generate as run_generation
from weaver.models.kernels import Dropout, attention
from weaver.models.memory import MemoryConfig, encode_in_windows, memory_from_settings
from weaver.models.pointer_mixture import pointer_mixture
from weaver.models.query_match import QueryMatch, QueryMatchConfig, query_match_from_settings
from weaver.models.recall import affine_parameters, folded_recall_attention, recall_attention
from weaver.utils.lockstep import in_lockstep

MODEL_TYPE = "weaver"
log = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, GENERATION_CONFIG_FILE = "config.json", "model.safetensors", "generation_config.json"


class WeaverHFConfig(PretrainedConfig):
    """An exported model's `config.json` as `transformers` reads it: registered with `AutoConfig`, so that
    `AutoTokenizer.from_pretrained(<exported folder>)` knows the model type instead of warning about it."""

    model_type = MODEL_TYPE


AutoConfig.register(MODEL_TYPE, WeaverHFConfig, exist_ok=True)


@dataclass
class WeaverConfig:
    vocab_size: int
    d_model: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    ffn_dim: int = 2048
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_positions: int = 1024
    pad_token_id: int = 0
    bos_token_id: int = 1  # also the decoder start token
    eos_token_id: int = 2
    # Pointer-generator copying (`CopyAttention`): the output distribution can take tokens straight from the source.
    copy_attention: bool = False
    # Long sources: encoded in overlapping windows into a memory the decoder recalls from (`MemoryConfig`).
    memory: MemoryConfig | None = None
    # Sources that start with a query: a learned vector marks the source tokens repeating it (`QueryMatchConfig`).
    query_match: QueryMatchConfig | None = None

    def __post_init__(self) -> None:
        sizes = "vocab_size d_model num_heads num_encoder_layers num_decoder_layers ffn_dim max_positions"
        for name in sizes.split():
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ConfigError(f"model.d_model ({self.d_model}) must be divisible by model.num_heads ({self.num_heads})")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(
                    f"model.{name} must be in [0, vocab_size={self.vocab_size}), got {getattr(self, name)}"
                )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if not isinstance(self.copy_attention, bool):
            raise ConfigError(f"model.copy_attention must be true or false, got {self.copy_attention!r}")
        if isinstance(self.memory, dict):
            self.memory = MemoryConfig.from_dict(self.memory)
        if self.memory is not None:
            self.memory.check_positions(self.max_positions)
        if isinstance(self.query_match, dict):
            self.query_match = QueryMatchConfig.from_dict(self.query_match)
        if self.query_match is not None and self.memory is not None:
            self.query_match.check_windows(self.memory)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WeaverConfig:
        return cls(**dataclass_values(cls, values, "model"))


@dataclass
class LayerCache:
    # (2, B, H, T_so_far, D/H): keys and values in one tensor, so that each decoding step extends one tensor per
    # layer, not two; keys first, so that keys and values are each contiguous (B, H, T, D/H).
    self_kv: Tensor | None = None
    # Rows of `self_kv` the next step takes (beam search's reorders, composed): gathered while copying into the
    # extended tensor, one copy of the prefix per step where reordering and then extending took two.
    pending_rows: Tensor | None = None
    cross_kv: tuple[Tensor, Tensor] | None = None  # (B, H, S, D/H) each, computed once per source

    def extend(self, kv: Tensor) -> Tensor:
        """The cached keys/values, in their pending row order, followed by the new ``kv`` (2, B, H, new, D/H); kept
        as the cache."""
        past = self.self_kv
        if past is None:
            self.self_kv = kv
            return kv
        length = past.size(3)
        extended = past.new_empty(*kv.shape[:3], length + kv.size(3), kv.size(4))
        prefix = extended[:, :, :, :length]
        if self.pending_rows is None:
            prefix.copy_(past)
        elif torch.is_grad_enabled() and past.requires_grad:  # out= is not differentiable: gather, then copy
            prefix.copy_(past.index_select(1, self.pending_rows))
        else:
            # Gathered per (row, head): each (T, D/H) block is contiguous in both tensors, and index_select copies
            # it whole; whole (H, T, D/H) rows into the strided prefix would go element by element.
            heads = past.size(2)
            rows = (self.pending_rows[:, None] * heads + torch.arange(heads, device=past.device)).flatten()
            torch.index_select(past.flatten(1, 2), 1, rows, out=extended.flatten(1, 2)[:, :, :length])
        extended[:, :, :, length:].copy_(kv)
        self.self_kv, self.pending_rows = extended, None
        return extended

    def reorder(self, rows: Tensor, sources: Tensor | None = None) -> None:
        if self.self_kv is not None:
            pending = self.pending_rows
            self.pending_rows = rows if pending is None else pending.index_select(0, rows)
        if self.cross_kv is not None and sources is not None:
            self.cross_kv = (self.cross_kv[0].index_select(0, sources), self.cross_kv[1].index_select(0, sources))


@dataclass
class DecoderCache:
    """Incremental decoding state: one `LayerCache` per decoder layer, filled by `WeaverModel.decode`."""

    layers: list[LayerCache]
    copy_keys: Tensor | None = None  # (B, S, D), `CopyAttention` keys of the encoder states, once per source

    @classmethod
    def empty(cls, num_layers: int) -> DecoderCache:
        return cls([LayerCache() for _ in range(num_layers)])

    @property
    def length(self) -> int:
        """Number of target positions already decoded."""
        kv = self.layers[0].self_kv if self.layers else None
        return 0 if kv is None else kv.size(3)

    def reorder(self, rows: Tensor, sources: Tensor | None = None) -> None:
        """Decoder row i becomes old row ``rows[i]`` (beam search: follow the surviving beams; any search: drop the
        finished sources), and with ``sources``, source j's state (cross-attention keys/values, copy keys, kept once
        per source, not per beam) becomes old source ``sources[j]``'s."""
        for layer in self.layers:
            layer.reorder(rows, sources)
        if self.copy_keys is not None and sources is not None:
            self.copy_keys = self.copy_keys.index_select(0, sources)


def _split_heads(x: Tensor, num_heads: int) -> Tensor:  # (B, T, D) -> (B, H, T, D/H)
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:  # (B, H, T, D/H) -> (B, T, D)
    return x.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    def __init__(self, config: WeaverConfig) -> None:
        super().__init__()
        self.num_heads, self.dropout = config.num_heads, config.attention_dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)  # fused Q, K, V projection
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, is_causal: bool = False, cache: LayerCache | None = None
    ) -> Tensor:
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, -1))  # (B, T, 3, H, D/H)
        q, kv = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1:].permute(2, 0, 3, 1, 4)  # (B, H, T, .), (2, B, H, T, .)
        if cache is not None:  # prepend the keys/values of the already-decoded prefix
            kv = cache.extend(kv)
        k, v = kv.unbind(0)
        y = attention(q, k, v, mask, is_causal, self.dropout if self.training else 0.0)
        return self.out(_merge_heads(y))


class CrossAttention(nn.Module):
    def __init__(self, config: WeaverConfig) -> None:
        super().__init__()
        self.num_heads, self.dropout = config.num_heads, config.attention_dropout
        self.q = nn.Linear(config.d_model, config.d_model)
        self.kv = nn.Linear(config.d_model, 2 * config.d_model)  # fused K, V projection of the source
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        mask: Tensor,
        cache: LayerCache | None = None,
        recall: MemoryConfig | None = None,
    ) -> Tensor:
        """``x`` may hold several consecutive rows per source row of ``memory`` (the beams of beam search): they
        share that source's keys and values, which are then neither copied per beam nor read once per beam. With
        ``recall``, each query attends to its `top_k` best memory entries only."""
        q = _split_heads(self.q(x), self.num_heads)  # (B * group, H, T, D/H)
        rows, heads, length, width = q.shape
        group = rows // memory.size(0)
        if group > 1:  # (B * group, H, T, .) -> (B, H, group * T, .): one matrix product per source and head
            q = q.view(-1, group, heads, length, width).transpose(1, 2).reshape(-1, heads, group * length, width)
        dropout = self.dropout if self.training else 0.0
        if recall is not None and recall.fold_keys:  # one memory of states for every layer: nothing to cache
            weight, bias = affine_parameters(self.kv, memory.size(-1))
            (key_weight, value_weight), (key_bias, value_bias) = weight.chunk(2), bias.chunk(2)
            y = folded_recall_attention(
                q, memory, key_weight, key_bias, value_weight, value_bias, mask, recall.top_k, dropout
            )
        else:
            if cache is not None and cache.cross_kv is not None:
                k, v = cache.cross_kv
            else:
                k, v = (_split_heads(t, self.num_heads) for t in self.kv(memory).chunk(2, dim=-1))
                if cache is not None:
                    cache.cross_kv = (k.contiguous(), v.contiguous())  # reused every step: laid out once
            if recall is not None:
                y = recall_attention(q, k, v, mask, recall.top_k, dropout)
            else:
                y = attention(q, k, v, mask, dropout=dropout)
        if group > 1:
            y = y.view(-1, heads, group, length, width).transpose(1, 2).reshape(rows, heads, length, width)
        return self.out(_merge_heads(y))


class CopyAttention(nn.Module):
    """Pointer-generator copying (See et al. 2017): the next-token distribution mixes the vocabulary softmax with a
    distribution over the source's own tokens, read off one attention head from each decoder state over the encoder
    states; a learnt gate sets the mix at each position. Names and terms a summary takes from its document then have
    a direct path to the output instead of having to be relearnt as vocabulary predictions.

    The result is log-probabilities (float32), which every consumer of logits can take as they are: log-softmax of
    a log-distribution is itself, so the training loss, beam search and sampling need no change.

    With memory (``top_k``), each output position copies from its `top_k` best-scoring source tokens only, as recall
    reads: the mixture is then corrected at K entries per row instead of the whole (any-length) source.
    """

    def __init__(self, config: WeaverConfig) -> None:
        super().__init__()
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key = nn.Linear(config.d_model, config.d_model)
        self.gate = nn.Linear(config.d_model, 1)  # P(generate from the vocabulary) = sigmoid(gate(h))
        self.pad_token_id = config.pad_token_id

    def forward(
        self,
        hidden: Tensor,
        logits: Tensor,
        keys: Tensor,
        source_ids: Tensor,
        source_mask: Tensor,
        top_k: int | None = None,
    ) -> Tensor:
        """Log-probabilities (N, T, V) from decoder states ``hidden`` (N, T, D) and their vocabulary ``logits``;
        ``keys`` (B, S, D) = ``self.key(encoder_states)``, ``source_ids`` and ``source_mask`` (B, S). N may be a
        multiple of B (consecutive beams of each source).

        The mixture is computed a chunk of rows at a time (`pointer_mixture`): the copy distribution is nonzero only
        at the source's tokens (or its ``top_k`` best-scoring ones), so each row is a log-softmax corrected there."""
        rows, length, width = hidden.shape
        sources, source_length = source_ids.shape
        group = rows // sources
        # Whatever a caller left under the mask, padding copies nothing: as padding, never as a real token's id
        # (the mixture writes each id once; a masked position sharing a real one's id would contend for its entry).
        source_ids = source_ids.masked_fill(~source_mask.bool(), self.pad_token_id)
        queries = self.query(hidden).reshape(sources, group * length, width)  # each source's beams together
        scores = (queries @ keys.transpose(1, 2)).float() * width**-0.5  # (B, group * T, S)
        scores = scores.masked_fill(~source_mask.bool()[:, None, :], float("-inf"))
        # A token at several positions is copied with the sum of their weights, gathered at each of them: `first` is
        # the first position holding each position's token.
        if top_k is not None and top_k < source_length:  # (B, group * T, K): each row's own K source positions
            scores, where = scores.topk(top_k, dim=-1)
            ids = source_ids.gather(1, where.flatten(1)).view_as(where)
            real = scores.isfinite()
            first = (ids[..., :, None] == ids[..., None, :]).to(torch.uint8).argmax(-1)
        else:  # every row reads the same S positions
            ids = source_ids[:, None, :].expand(-1, group * length, -1)
            real = source_mask.bool()[:, None, :].expand_as(ids)
            first = (source_ids[:, :, None] == source_ids[:, None, :]).to(torch.uint8).argmax(-1)[:, None, :]
            first = first.expand_as(ids)
        weights = scores.softmax(-1)
        copied = weights.new_zeros(weights.shape).scatter_add_(2, first, weights).gather(2, first)
        unique = first == torch.arange(ids.size(-1), device=first.device)
        log_probs = pointer_mixture(
            logits.reshape(rows * length, -1),
            self.gate(hidden).float().reshape(-1, 1),
            copied.reshape(-1, ids.size(-1)),
            ids.reshape(-1, ids.size(-1)),
            real.reshape(-1, ids.size(-1)),
            unique.reshape(-1, ids.size(-1)),
        )
        return log_probs.view(rows, length, -1)


class FeedForward(nn.Module):
    def __init__(self, config: WeaverConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, config.ffn_dim)
        self.down = nn.Linear(config.ffn_dim, config.d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class EncoderLayer(nn.Module):
    def __init__(self, config: WeaverConfig) -> None:
        super().__init__()
        self.attn_norm, self.attn = nn.LayerNorm(config.d_model), SelfAttention(config)
        self.ffn_norm, self.ffn = nn.LayerNorm(config.d_model), FeedForward(config)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), mask=mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class DecoderLayer(nn.Module):
    def __init__(self, config: WeaverConfig) -> None:
        super().__init__()
        self.self_attn_norm, self.self_attn = nn.LayerNorm(config.d_model), SelfAttention(config)
        self.cross_attn_norm, self.cross_attn = nn.LayerNorm(config.d_model), CrossAttention(config)
        self.ffn_norm, self.ffn = nn.LayerNorm(config.d_model), FeedForward(config)
        self.dropout = Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        self_mask: Tensor | None,
        is_causal: bool,
        cache: LayerCache | None = None,
        recall: MemoryConfig | None = None,
    ) -> Tensor:
        x = x + self.dropout(self.self_attn(self.self_attn_norm(x), self_mask, is_causal, cache))
        x = x + self.dropout(self.cross_attn(self.cross_attn_norm(x), memory, memory_mask, cache, recall))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


def sinusoidal_positions(num_positions: int, dim: int) -> Tensor:
    """(num_positions, dim) table: sin on the first half of the channels, cos on the second."""
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim // 2, dtype=torch.float) / (dim // 2))
    angles = torch.arange(num_positions, dtype=torch.float)[:, None] * inv_freq[None, :]
    table = torch.zeros(num_positions, dim)
    table[:, : dim // 2], table[:, dim // 2 : 2 * (dim // 2)] = angles.sin(), angles.cos()
    return table


class WeaverModel(nn.Module):
    def __init__(self, config: WeaverConfig) -> None:
        super().__init__()
        self.config = config
        # Decoding defaults of `generate`; `from_pretrained` reads the exported ones.
        self.generation_config = GenerationConfig()
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_scale = math.sqrt(config.d_model)
        # Sinusoidal positions: no parameters and no length-specific training, a fine default for MT.
        self.register_buffer("positions", sinusoidal_positions(config.max_positions, config.d_model), persistent=False)
        self.dropout = Dropout(config.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_encoder_layers))
        self.encoder_norm = nn.LayerNorm(config.d_model)
        self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.decoder_norm = nn.LayerNorm(config.d_model)
        self.copy = CopyAttention(config) if config.copy_attention else None
        self.query_match = QueryMatch(config.query_match, config.d_model) if config.query_match else None
        # Recompute each layer's activations in backward instead of keeping them: less memory, ~1/3 more compute.
        self.activation_checkpointing = False
        # Modules a fine-tune turned on over saved weights (`load_weaver`'s copy_attention, query_match): adapters
        # train them in full (peft's modules_to_save), as they start untrained.
        self.added_modules: tuple[str, ...] = ()
        self.apply(self._init_weights)
        # As fairseq: std d_model^-0.5, so scaled token embeddings start on the scale of the positions.
        nn.init.normal_(self.embed.weight, mean=0.0, std=config.d_model**-0.5)
        with torch.no_grad():
            self.embed.weight[config.pad_token_id].zero_()

    @property
    def decoder_positions(self) -> int:
        """The most target tokens the decoder can take, the start token included: what bounds generation."""
        return self.config.max_positions

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _embed(self, ids: Tensor, offset: int = 0, added: Tensor | None = None) -> Tensor:
        if offset + ids.size(1) > self.config.max_positions:
            raise ValueError(
                f"sequence of {offset + ids.size(1)} positions exceeds model.max_positions={self.config.max_positions}"
            )
        positions = self.positions[offset : offset + ids.size(1)]
        x = self.embed(ids) * self.embed_scale + positions
        return self.dropout(x if added is None else x + added)

    def _run_layer(self, layer: nn.Module, *args: Any) -> Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Encoder states (B, S, D); ``attention_mask`` (B, S) is 1/True on real tokens. With `memory`, the source
        may be any length: it is read in overlapping windows (each checkpointed under activation checkpointing)."""
        memory = self.config.memory
        if memory is None:
            return self._encode_window(input_ids, attention_mask)
        checkpoint = self.activation_checkpointing and self.training
        return encode_in_windows(
            self._encode_window,
            input_ids,
            attention_mask,
            memory,
            checkpoint,
            self.config.max_positions,
            lockstep=in_lockstep(self),
        )

    def _encode_window(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S), broadcast over heads and queries
        marks = None if self.query_match is None else self.query_match(input_ids, attention_mask)
        x = self._embed(input_ids, added=marks)
        layer_checkpointing = self.config.memory is None  # with memory, whole windows are checkpointed instead
        for layer in self.encoder_layers:
            x = self._run_layer(layer, x, mask) if layer_checkpointing else layer(x, mask)
        return self.encoder_norm(x)

    @property
    def recall(self) -> MemoryConfig | None:
        """The memory settings when the decoder recalls top-k entries: always in evaluation and decoding, and in
        training unless `memory.training` is `full`."""
        memory = self.config.memory
        if memory is None or (self.training and memory.training == "full"):
            return None
        return memory

    def decode(
        self,
        decoder_input_ids: Tensor,
        encoder_states: Tensor,
        encoder_attention_mask: Tensor,
        cache: DecoderCache | None = None,
        source_ids: Tensor | None = None,
    ) -> Tensor:
        """Logits (N, T, V) in the compute dtype (bf16 under autocast; the training loss upcasts them chunk by
        chunk); with `copy_attention`, float32 log-probabilities, which needs the ``source_ids``. With a cache,
        ``decoder_input_ids`` are only the new tokens. N may be a multiple of the encoder's rows (beams)."""
        past = 0 if cache is None else cache.length
        new = decoder_input_ids.size(1)
        # Causal self-attention: SDPA's is_causal when queries and keys start together; one new query may
        # see the whole cached prefix; several new queries after a prefix need an explicit offset mask.
        self_mask, is_causal = None, past == 0
        if past > 0 and new > 1:
            self_mask = torch.ones(new, past + new, dtype=torch.bool, device=decoder_input_ids.device)
            self_mask = self_mask.tril(diagonal=past)
        memory_mask = encoder_attention_mask.bool()[:, None, None, :]
        x = self._embed(decoder_input_ids, offset=past)
        recall = self.recall
        for i, layer in enumerate(self.decoder_layers):
            layer_cache = None if cache is None else cache.layers[i]
            x = self._run_layer(layer, x, encoder_states, memory_mask, self_mask, is_causal, layer_cache, recall)
        hidden = self.decoder_norm(x)
        # Output projection tied to the embedding (one V x D matrix, a single state_dict entry).
        logits = F.linear(hidden, self.embed.weight)
        if self.copy is None:
            return logits
        if source_ids is None:
            raise ValueError("a model with copy_attention needs the source_ids to decode")
        keys = None if cache is None else cache.copy_keys
        if keys is None:
            keys = self.copy.key(encoder_states)
            if cache is not None:
                cache.copy_keys = keys
        return self.copy(
            hidden, logits, keys, source_ids, encoder_attention_mask, None if recall is None else recall.top_k
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor, decoder_input_ids: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V); targets are right-padded so causal masking is enough."""
        states = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, states, attention_mask, source_ids=input_ids)

    @property
    def decodes_log_probs(self) -> bool:
        """`decode` returns copy attention's float32 log-probabilities rather than logits (see `Seq2SeqModel`)."""
        return self.copy is not None

    @property
    def decoder_start_token_id(self) -> int:
        """The token that starts every target (teacher forcing and generation alike)."""
        return self.config.bos_token_id

    def new_cache(self) -> DecoderCache:
        return DecoderCache.empty(len(self.decoder_layers))

    def generate(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        **overrides: Any,
    ) -> Tensor:
        """Generated tokens (B, L) after the start token, EOS included, padded after EOS; with
        ``mbr_num_samples``, that many consecutive rows per source (B * samples, L), MBR's candidates.

        ``overrides`` replace fields of ``generation_config``, e.g. ``model.generate(x, m, num_beams=4)``.
        The caller chooses train/eval mode (dropout stays active in train mode).
        """
        config = replace(generation_config or self.generation_config, **overrides)
        return run_generation(self, input_ids, attention_mask, config)

    def config_files(self, generation_config: GenerationConfig | None = None) -> dict[str, bytes]:
        """`config.json` and `generation_config.json` as {name: bytes}, as `save_pretrained` writes them and a
        checkpoint stores them: a run started from saved weights (`load_weaver`) is rebuilt from them, without the
        folder or checkpoint it started from."""
        config = {"model_type": MODEL_TYPE, **self.config.to_dict()}
        generation = (generation_config or self.generation_config).to_dict()
        return {
            name: (json.dumps(values, indent=2) + "\n").encode()
            for name, values in ((CONFIG_FILE, config), (GENERATION_CONFIG_FILE, generation))
        }

    def save_pretrained(self, folder: str | Path, generation_config: GenerationConfig | None = None) -> None:
        """`config.json`, `model.safetensors` and `generation_config.json`: all `from_pretrained` needs."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.config_files(generation_config).items():
            (folder / name).write_bytes(content)
        weights = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(weights, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})

    @classmethod
    def from_config_files(cls, folder: str | Path) -> WeaverModel:
        """A model of the config (and decoding settings) in `folder`, its weights freshly initialised for
        `from_pretrained`'s, or a restored checkpoint's, to replace."""
        folder = Path(folder).expanduser()
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError(f"'{folder}' has no {CONFIG_FILE}: not a folder written by save_pretrained.")
        values = json.loads(config_path.read_text())
        model_type = values.pop("model_type", None)
        if model_type != MODEL_TYPE:
            raise ConfigError(f"'{config_path}' describes a '{model_type}' model, not a '{MODEL_TYPE}' one.")
        model = cls(WeaverConfig.from_dict(values))
        generation_path = folder / GENERATION_CONFIG_FILE
        if generation_path.is_file():
            model.generation_config = GenerationConfig.from_dict(json.loads(generation_path.read_text()))
        return model

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> WeaverModel:
        """A model saved by `save_pretrained`, in eval mode. Weights come from safetensors: nothing is unpickled."""
        model = cls.from_config_files(folder)
        model.load_state_dict(load_file(str(Path(folder).expanduser() / WEIGHTS_FILE)))
        return model.eval()

    def training_flops(self, batch_size: int, source_length: int, target_length: int) -> int:
        """Floating-point operations of one training step (forward and backward: 3x the forward's matrix products)
        on a padded (batch_size, source_length) -> (batch_size, target_length) batch; what MFU divides by.
        Counts the projections, both attention products of every layer (full score matrices, as computed) and the
        output projection; elementwise work is left out, as usual for MFU."""
        c, b, s, t = self.config, batch_size, source_length, target_length
        d, f = c.d_model, c.ffn_dim
        encoder_layer = b * s * (4 * d * d + 2 * d * f) + 2 * b * s * s * d
        decoder_layer = b * t * (6 * d * d + 2 * d * f) + b * s * 2 * d * d + 2 * b * t * (t + s) * d
        output = b * t * d * c.vocab_size
        copy = (b * (t + s) * d * d + b * t * s * d + b * t * d) if c.copy_attention else 0
        forward = 2 * (c.num_encoder_layers * encoder_layer + c.num_decoder_layers * decoder_layer + output + copy)
        return 3 * forward

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count; tied weights are counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def build_weaver(
    vocab_size: int | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    activation_checkpointing: bool = False,
    memory: Mapping[str, Any] | None = None,
    query_match: Mapping[str, Any] | None = None,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
    **kwargs: Any,
) -> WeaverModel:
    """Hydra builder (``_target_: weaver.models.build_weaver``): the vocabulary and special ids come from
    ``tokenizer`` unless given; the data's lengths are checked against the positions before any training."""
    if tokenizer is not None:
        vocab_size = vocab_size or len(tokenizer)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            kwargs.setdefault(name, getattr(tokenizer, name))
    if vocab_size is None:
        raise ConfigError("model: build_weaver needs a tokenizer or a vocab_size")
    config = WeaverConfig(
        vocab_size=vocab_size,
        memory=memory_from_settings(memory, tokenizer),
        query_match=query_match_from_settings(query_match, tokenizer),
        **kwargs,
    )
    return _prepared(WeaverModel(config), activation_checkpointing, max_source_length, max_target_length)


def saved_model_path(init_from: str) -> Path:
    """`model.init_from` as a path, which must exist (an exported folder or a .ckpt file)."""
    path = Path(init_from).expanduser()
    if not path.exists():
        raise ConfigError(f"model.init_from='{init_from}' does not exist: give an exported folder or a .ckpt file.")
    return path


def load_weaver(
    init_from: str,
    tokenizer: PreTrainedTokenizerBase | None = None,
    activation_checkpointing: bool = False,
    memory: Mapping[str, Any] | None = None,
    dropout: float | None = None,
    copy_attention: bool | None = None,
    query_match: Mapping[str, Any] | None = None,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
    saved_config: str | None = None,
) -> WeaverModel:
    """Hydra builder for `model=weaver_pretrained` (and the shipped `model=weaver_small_pretrained`): fine-tune (or
    adapt with LoRA) an exported Weaver model (adapters exported alone are merged into their base), or the one in a
    training checkpoint (a `.ckpt` file, e.g. of `task=pretrain`). ``memory`` (`memory=recall`) and ``dropout``
    replace the saved settings: neither changes the weights, and a model pretrained without dropout is usually
    fine-tuned with it. ``copy_attention`` turned on adds the copy module, and ``query_match`` its vector, each from
    its fresh initialisation while every saved weight is kept (with peft adapters, these train in full).
    `saved_config`: a restored checkpoint's model config files (`WeaverModel.config_files`), of which a model is
    built for the checkpoint's weights, `init_from` unread."""
    if saved_config is not None:
        model = WeaverModel.from_config_files(saved_config)
    elif (path := saved_model_path(init_from)).is_file():
        from weaver.checkpoints import checkpoint_weaver  # it builds models: imported here, not at module load

        model = checkpoint_weaver(path)
    elif (path / ADAPTER_CONFIG_FILE).is_file():  # exported adapters: their base with them merged in
        from weaver.checkpoints import plain_weaver
        from weaver.export import from_pretrained

        fix = "train from their base model (base_model_name_or_path in its adapter_config.json) or their checkpoint"
        model = plain_weaver(from_pretrained(path), f"model.init_from='{init_from}'", fix)
    else:
        try:
            model = WeaverModel.from_pretrained(path)
        except ConfigError as error:
            raise ConfigError(f"model.init_from='{init_from}': {error}") from None
    settings: dict[str, Any] = {}
    if tokenizer is not None and len(tokenizer) != model.config.vocab_size:
        if len(tokenizer) < model.config.vocab_size:
            raise ConfigError(
                f"The tokenizer has {len(tokenizer)} tokens but the model at model.init_from='{init_from}' has "
                f"{model.config.vocab_size}: use the tokenizer saved with it (tokenizer.name_or_path={init_from})."
            )
        # The saved tokenizer plus a task's special tokens (a data marker such as <query>), appended after its ids.
        log.info(
            "The tokenizer adds %d special tokens to the model's %d: their embeddings start at the mean embedding.",
            len(tokenizer) - model.config.vocab_size,
            model.config.vocab_size,
        )
        settings["vocab_size"] = len(tokenizer)
    if memory_replaced(memory, model.config.memory):
        settings["memory"] = memory_from_settings(saved_memory_kept(memory, model.config.memory), tokenizer)
    if dropout is not None:
        settings["dropout"] = dropout
    if copy_attention is not None:
        settings["copy_attention"] = copy_attention
    if query_match is not None:
        settings["query_match"] = query_match_from_settings(query_match, tokenizer)
    if settings:  # rebuilt with the new settings, then given the same weights (a module it no longer has dropped)
        weights = model.state_dict()
        model = WeaverModel(replace(model.config, **settings))
        state = model.state_dict()
        state.update({name: grown(value, state[name]) for name, value in weights.items() if name in state})
        model.load_state_dict(state)
    model.added_modules = tuple(
        name for name, given in (("copy", copy_attention), ("query_match", query_match)) if given
    )
    return _prepared(model.train(), activation_checkpointing, max_source_length, max_target_length)


def memory_replaced(memory: Mapping[str, Any] | None, saved: MemoryConfig | None) -> bool:
    """Whether `model.memory` changes the saved model's memory: `memory=none` (None) turns it off, `memory=saved`
    (`{saved: true}`) keeps it, and any key given beside `saved` replaces that setting."""
    if memory is None:
        return saved is not None
    return set(memory) != {"saved"}


def saved_memory_kept(memory: Mapping[str, Any] | None, saved: MemoryConfig | None) -> dict[str, Any] | None:
    """The `model.memory` settings with those `memory=saved` keeps filled in from the saved model's (a marker token
    given, even null, replaces the saved one's id)."""
    if memory is None:
        return None
    given = {key: value for key, value in memory.items() if key != "saved"}
    kept = saved.to_dict() if saved is not None and memory.get("saved") else {}
    return {**{k: v for k, v in kept.items() if k.removesuffix("_id") not in given}, **given}


def grown(saved: Tensor, target: Tensor) -> Tensor:
    """`saved` with rows added to match `target`'s (a vocabulary grown by new tokens), each the mean saved row."""
    if saved.shape == target.shape:
        return saved
    extra = saved.mean(dim=0, keepdim=True).expand(target.shape[0] - saved.shape[0], *saved.shape[1:])
    return torch.cat([saved, extra])


def _prepared(
    model: WeaverModel, activation_checkpointing: bool, max_source_length: int | None, max_target_length: int | None
) -> WeaverModel:
    if not isinstance(activation_checkpointing, bool):
        raise ConfigError(f"model.activation_checkpointing must be true or false, got {activation_checkpointing!r}")
    config = model.config
    lengths = {"max_target_length": max_target_length}
    if config.memory is None:  # with memory the source may be any length: windows keep within the positions
        lengths["max_source_length"] = max_source_length
    for key, length in lengths.items():
        if length is not None and length > config.max_positions:
            hint = " (or read long sources in windows: memory=recall)" if key == "max_source_length" else ""
            raise ConfigError(
                f"data.{key}={length} exceeds model.max_positions={config.max_positions}; "
                f"set data.{key}<={config.max_positions}{hint}"
            )
    model.activation_checkpointing = activation_checkpointing
    return model
