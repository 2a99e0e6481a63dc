"""Memory: a source far longer than the encoder's positions, read in overlapping windows.

The encoder reads the source in windows of `MemoryConfig.window` tokens, `stride` tokens apart, each within the
positions the model was trained on, so encoding cost grows linearly with the source's length and peak activation
memory with `window_batch_size` windows at a time. Each source token keeps its state from the window where it sits
most centrally (the one whose centre is nearest), as SLED and Unlimiformer do, so every kept state saw as much
context on both sides as the windowing allows. An optional prefix (a query: the source's tokens up to and
including `prefix_token_id`) is read again at the start of every window, so each part of a long source is
encoded knowing what was asked; its states are kept once, from the first window. An optional segment token (the
recall set's `<doc>`) starts segments that no window crosses, so each document of a multi-document source is encoded
on its own (in windows as usual where it is longer than one), as it would be were it the whole source.

Where one window covers the whole source, this is exactly one-pass encoding. The memory is the encoder states of
every source token, (B, S, D); `weaver.models.recall` reads it from the decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor

from weaver.errors import ConfigError, check_known_keys, dataclass_values, require_positive_int
from weaver.utils.lockstep import most_on_any_rank

TRAINING_MODES = ("recall", "full")
# `model.memory` keys naming a token by its text, each filling the `<name>_id` field with its id.
MARKER_TOKENS = ("prefix_token", "segment_token")


@dataclass
class MemoryConfig:
    """`model.memory` (`memory=recall`): how a long source is encoded and recalled. Adds no parameters, so a model
    trained without memory can be evaluated with it and the other way round."""

    window: int = 256  # source tokens an encoder window reads (the prefix comes on top)
    stride: int = 128  # tokens between the starts of consecutive windows; < window, so windows overlap
    top_k: int = 16  # memory entries each decoder query attends to, per layer and head
    # Fold each layer's key projection into its queries and keep one memory of encoder states for every layer and
    # head (Unlimiformer), instead of per-layer keys and values: 2 x layers x fewer stored entries, more compute.
    fold_keys: bool = False
    # recall: the decoder learns with top-k recall over the memory, gradients through the entries it fetched;
    # full: cross-attention over the whole memory in training, top-k recall in evaluation and generation.
    training: str = "recall"
    window_batch_size: int = 16  # windows encoded at once: bounds peak activation memory
    prefix_token_id: int | None = None  # the token ending a prefix that every window starts with (None: no prefix)
    segment_token_id: int | None = None  # the token starting a segment that no window crosses (None: no segments)

    def __post_init__(self) -> None:
        for name in ("window", "stride", "top_k", "window_batch_size"):
            require_positive_int(f"model.memory.{name}", getattr(self, name))
        if self.stride >= self.window:
            raise ConfigError(
                f"model.memory.stride={self.stride} must be smaller than model.memory.window={self.window}: "
                "windows must overlap for every token to sit inside one away from its edges"
            )
        if self.training not in TRAINING_MODES:
            raise ConfigError(f"model.memory.training must be one of {list(TRAINING_MODES)}, got {self.training!r}")
        if not isinstance(self.fold_keys, bool):
            raise ConfigError(f"model.memory.fold_keys must be true or false, got {self.fold_keys!r}")

    def check_positions(self, max_positions: int, key: str = "model.max_positions") -> None:
        if self.window > max_positions:
            raise ConfigError(
                f"model.memory.window={self.window} exceeds {key}={max_positions}: a window must fit the positions "
                "the model was trained on"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MemoryConfig:
        return cls(**dataclass_values(cls, values, "model.memory"))


def memory_from_settings(settings: Mapping[str, Any] | None, tokenizer: Any = None) -> MemoryConfig | None:
    """`MemoryConfig` from the `model.memory` node (`conf/memory/`), whose `prefix_token` and `segment_token` (text)
    become `prefix_token_id` and `segment_token_id` with ``tokenizer``; None (`memory=none`) stays None."""
    if settings is None:
        return None
    values = dict(settings)
    if "saved" in values:
        raise ConfigError(
            "memory=saved keeps the memory settings saved with model.init_from's model: it is for "
            "model=weaver_pretrained; give memory=recall or memory=none"
        )
    check_known_keys(values, {field.name for field in fields(MemoryConfig)} | set(MARKER_TOKENS), "model.memory")
    for name in MARKER_TOKENS:
        token = values.pop(name, None)
        if token is not None:
            values[f"{name}_id"] = token_id(tokenizer, token, f"model.memory.{name}")
    return MemoryConfig.from_dict(values)


def token_id(tokenizer: Any, token: str, key: str) -> int:
    """The id of ``token`` (a marker such as `<query>`, named by the config key ``key``) in ``tokenizer``."""
    found = tokenizer.convert_tokens_to_ids(token) if tokenizer is not None else None
    if found is None or found == getattr(tokenizer, "unk_token_id", None):
        raise ConfigError(f"{key}={token!r} is not a token of the tokenizer")
    return int(found)


def prefix_lengths(input_ids: Tensor, attention_mask: Tensor, prefix_token_id: int | None) -> Tensor:
    """Per source, how many leading tokens every window repeats: up to and including the first `prefix_token_id`
    (0 where the source has none)."""
    if prefix_token_id is None:
        return input_ids.new_zeros(input_ids.size(0))
    is_end = (input_ids == prefix_token_id) & attention_mask.bool()
    first = is_end.to(torch.uint8).argmax(1)
    return torch.where(is_end.any(1), first + 1, 0)


def segment_starts(
    input_ids: Tensor, attention_mask: Tensor, prefixes: Tensor, segment_token_id: int | None
) -> list[list[int]]:
    """Per source, the body positions (after the prefix) where a segment starts: each `segment_token_id` there but
    the first, whose segment starts with the body: what comes before it (a space the tokenizer kept between the
    query and the first document) is read with the first segment, not as a window of its own."""
    if segment_token_id is None:
        return [[] for _ in range(input_ids.size(0))]
    marks = (input_ids == segment_token_id) & attention_mask.bool()
    rows, positions = marks.nonzero(as_tuple=True)
    starts: list[list[int]] = [[] for _ in range(input_ids.size(0))]
    for row, position in zip(rows.tolist(), (positions - prefixes[rows]).tolist(), strict=True):
        if position >= 0:  # a marker inside the prefix starts nothing
            starts[row].append(position)
    return [row_starts[1:] for row_starts in starts]


def window_layout(
    lengths: Tensor, prefixes: Tensor, window: int, stride: int, segments: list[list[int]] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Where each source's windows start and end in its body (the tokens after the prefix), (B, W) each with -1 for
    windows a source does not need, and the body position where each next window takes over, (B, W - 1).

    Windows never cross a segment's start (``segments``: per source, the body positions where one starts; none: the
    body is one segment). In each segment, starts go `stride` apart and the last one is moved back to end at the
    segment's end, as SLED does, so no window is mostly padding. A token belongs to the window of its segment whose
    centre is nearest: the boundary between consecutive windows is halfway between their centres, inside both,
    since they overlap."""
    bodies = (lengths - prefixes).clamp(min=0).tolist()
    layouts = [
        _body_windows(body, segments[row] if segments else [], window, stride) for row, body in enumerate(bodies)
    ]
    count = max(len(starts) for starts, _, _ in layouts)

    def padded(values: list[int], size: int, fill: int) -> list[int]:
        return values + [fill] * (size - len(values))

    never = torch.iinfo(lengths.dtype).max
    starts = lengths.new_tensor([padded(starts, count, -1) for starts, _, _ in layouts])
    ends = lengths.new_tensor([padded(ends, count, -1) for _, ends, _ in layouts])
    boundaries = lengths.new_tensor([padded(taken, count - 1, never) for _, _, taken in layouts])
    return starts, ends, boundaries.view(len(bodies), count - 1)


def _body_windows(
    body: int, segment_starts: list[int], window: int, stride: int
) -> tuple[list[int], list[int], list[int]]:
    """One body's window starts, ends and takeover positions (see `window_layout`); a body of no tokens still gets
    one (empty) window, which reads the prefix."""
    starts, ends, boundaries = [], [], []
    edges = sorted({0, *segment_starts, body})
    for first, end in zip(edges, edges[1:], strict=False):
        last = first + max(end - first - window, 0)
        for index, start in enumerate([*range(first, last, stride), last]):
            if starts:  # a segment's first window takes over at the segment's start
                boundaries.append(first if index == 0 else (starts[-1] + start + window + 1) // 2)
            starts.append(start)
            ends.append(min(start + window, end))
    return (starts, ends, boundaries) if starts else ([0], [0], [])


def source_windows(
    input_ids: Tensor, attention_mask: Tensor, config: MemoryConfig
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """How ``config`` reads each source: its prefix length (B,), then `window_layout`'s window starts, ends and
    takeover positions; a source needs as many windows as it has starts >= 0."""
    mask = attention_mask.bool()
    prefixes = prefix_lengths(input_ids, mask, config.prefix_token_id)
    segments = segment_starts(input_ids, mask, prefixes, config.segment_token_id)
    return prefixes, *window_layout(mask.sum(1), prefixes, config.window, config.stride, segments)


def encode_in_windows(
    encode: Callable[[Tensor, Tensor], Tensor],
    input_ids: Tensor,
    attention_mask: Tensor,
    config: MemoryConfig,
    checkpoint: bool = False,
    max_positions: int | None = None,
    lockstep: bool = False,
) -> Tensor:
    """The memory (B, S, D): ``encode(ids, mask)`` (the encoder on at most prefix + window tokens) run on every
    window, each token's state taken from its most central window. ``checkpoint`` recomputes each batch of windows
    in backward instead of keeping its activations; ``max_positions`` bounds prefix + window; ``lockstep`` (a
    sharded encoder, see `weaver.utils.lockstep`) runs as many batches of windows as the rank with the most."""
    mask = attention_mask.bool()
    batch, length = input_ids.shape
    prefixes, starts, ends, boundaries = source_windows(input_ids, mask, config)
    needed = starts >= 0  # (B, W): the windows each source needs come first
    width = int(prefixes.max()) + config.window
    # Position m of window (b, j) reads source position m inside the prefix and m + starts[b, j] after it.
    offsets = torch.arange(width, device=input_ids.device)
    in_body = offsets >= prefixes[:, None, None]  # (B, 1, width)
    source_index = offsets + torch.where(in_body, starts.clamp(min=0)[:, :, None], 0)  # (B, W, width)
    valid = offsets < (prefixes[:, None] + ends - starts)[:, :, None]
    source_index = source_index.clamp(max=length - 1)
    window_mask = valid[needed]  # (N, width), N windows in all
    used = max(int(window_mask.sum(1).max()), 1)  # no column of padding alone (one where every source is empty)
    if max_positions is not None and used > max_positions:
        raise ConfigError(
            f"A source's prefix of {int(prefixes.max())} tokens plus model.memory.window={config.window} make "
            f"windows of {used} tokens, past the model's {max_positions} positions: lower model.memory.window"
        )
    rows = torch.arange(batch, device=input_ids.device)[:, None].expand_as(needed)[needed]
    window_ids, window_mask = input_ids[rows[:, None], source_index[needed][:, :used]], window_mask[:, :used]
    size = config.window_batch_size
    batch_starts = range(0, len(window_ids), size)
    # Agreed before the encoder's first weight gather, so the ranks' collectives stay in the same order.
    idle = most_on_any_rank(len(batch_starts), lockstep, input_ids.device) - len(batch_starts)
    # Windows of like length batched together (longest first), each batch cut to its longest: a source's windows
    # differ in length where documents (segments) are shorter than a window, and padding them all to the longest
    # window would encode up to twice the tokens.
    lengths = window_mask.sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    widths = lengths[order].tolist()
    parts = []
    for i in batch_starts:
        chosen, width = order[i : i + size], max(widths[i], 1)
        part = _run(encode, window_ids[chosen, :width], window_mask[chosen, :width], checkpoint)
        parts.append(torch.nn.functional.pad(part, (0, 0, 0, used - width)))
    states = torch.cat(parts)[torch.argsort(order)]
    for _ in range(idle):
        # An idle batch, in the graph (times 0) so that backward, too, runs the encoder as often as on other ranks.
        states = states + 0 * _run(encode, window_ids[:1], window_mask[:1], checkpoint).sum()
    # Source position k of row b comes from window j (0 in the prefix; past it, the window owning body position
    # k - prefix) at offset k - starts[b, j]; that window is number first[b] + j among the N encoded.
    positions = torch.arange(length, device=input_ids.device).expand(batch, length)
    body = (positions - prefixes[:, None]).clamp(min=0)
    owner = torch.searchsorted(boundaries.contiguous(), body.contiguous(), right=True)
    owner = torch.where(positions < prefixes[:, None], 0, owner)
    first = needed.sum(1).cumsum(0) - needed.sum(1)
    offset = (positions - starts.gather(1, owner)).clamp(0, used - 1)
    flat = (first[:, None] + owner) * used + offset
    memory = states.flatten(0, 1).index_select(0, flat.flatten()).view(batch, length, -1)
    return memory.masked_fill(~mask[:, :, None], 0.0)


def _run(encode: Callable[[Tensor, Tensor], Tensor], ids: Tensor, mask: Tensor, checkpoint: bool) -> Tensor:
    if checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(encode, ids, mask, use_reentrant=False)
    return encode(ids, mask)
