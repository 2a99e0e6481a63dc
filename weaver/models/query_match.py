"""Query-match features: mark where a source repeats its query, so that a long source's relevant part can be found.

A source may start with a query (its tokens up to and including `query_token_id`, e.g. the recall set's package
name before `<query>`). Every source token after it that lies inside an occurrence of `ngram` consecutive query
tokens gets one learned vector added to its embedding: DrQA's exact-match feature, over n-grams rather than single
tokens, since a single subword ("lib", "-", "dev") recurs all over a long source while a query's bigrams rarely do.
Matching tokens with tokens is what a small encoder learns slowest; the feature gives it that comparison, and
learning what to do with the marked tokens is left to the model. The vector starts at zero, so a model given the
feature starts out computing what it computed without it.

With memory, each window starts with the query and is marked on its own: a token's marks depend on its ngram - 1
neighbours on either side only, which every state the memory keeps has inside its window where consecutive windows
overlap by 2 (ngram - 1) tokens or more (checked), so windowed and one-pass encoding agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from weaver.errors import ConfigError, check_known_keys, dataclass_values, require_positive_int
from weaver.models.memory import MemoryConfig, prefix_lengths, token_id


@dataclass
class QueryMatchConfig:
    """`model.query_match`: which token ends a source's query, and how many consecutive query tokens make a match."""

    query_token_id: int
    ngram: int = 2

    def __post_init__(self) -> None:
        require_positive_int("model.query_match.ngram", self.ngram)

    def check_windows(self, memory: MemoryConfig) -> None:
        """Each window is marked on its own: one that does not start with the query marks nothing, and a token kept
        from the edge of its window would lose the matches its neighbours past the edge make."""
        if memory.prefix_token_id != self.query_token_id:
            raise ConfigError(
                "model.query_match with model.memory needs model.memory.prefix_token to be the query token "
                f"(id {self.query_token_id}, got {memory.prefix_token_id}), so that every window starts with the "
                "query: windows without it mark nothing"
            )
        needed, overlap = 2 * (self.ngram - 1), memory.window - memory.stride
        if overlap < needed:
            raise ConfigError(
                f"model.query_match.ngram={self.ngram} needs encoder windows that overlap by {needed} tokens or "
                f"more; model.memory.window={memory.window} and model.memory.stride={memory.stride} overlap by "
                f"{overlap}: lower model.memory.stride"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> QueryMatchConfig:
        return cls(**dataclass_values(cls, dict(values), "model.query_match"))


def query_match_from_settings(settings: Mapping[str, Any] | None, tokenizer: Any = None) -> QueryMatchConfig | None:
    """`QueryMatchConfig` from the `model.query_match` node, whose `query_token` (text) becomes `query_token_id` with
    ``tokenizer``; None stays None."""
    if settings is None:
        return None
    values = dict(settings)
    check_known_keys(values, {field.name for field in fields(QueryMatchConfig)} | {"query_token"}, "model.query_match")
    query_token = values.pop("query_token", None)
    if query_token is not None:
        values["query_token_id"] = token_id(tokenizer, query_token, "model.query_match.query_token")
    if "query_token_id" not in values:
        raise ConfigError("model.query_match needs query_token: the token that ends each source's query")
    return QueryMatchConfig.from_dict(values)


def query_matches(input_ids: Tensor, attention_mask: Tensor, config: QueryMatchConfig) -> Tensor:
    """(B, S) bool: the tokens after each source's query that lie inside an occurrence of `config.ngram`
    consecutive tokens of the query (the tokens before `query_token_id`; none where a source has no query)."""
    batch, length = input_ids.shape
    n = config.ngram
    prefixes = prefix_lengths(input_ids, attention_mask, config.query_token_id)
    query_lengths = (prefixes - 1).clamp(min=0)
    longest = int(query_lengths.max()) if batch else 0
    matched = torch.zeros_like(input_ids, dtype=torch.bool)
    if longest < n or length < n:
        return matched
    positions = torch.arange(length, device=input_ids.device)
    in_query = positions[None, :longest] < query_lengths[:, None]  # (B, Q)
    in_body = (positions[None, :] >= prefixes[:, None]) & attention_mask.bool()  # (B, S)
    equal = (input_ids[:, :, None] == input_ids[:, None, :longest]) & in_body[:, :, None] & in_query[:, None, :]
    # starts[b, i, j]: source tokens i..i+n-1 equal query tokens j..j+n-1.
    sources, queries = length - n + 1, longest - n + 1
    starts = equal[:, :sources, :queries]
    for offset in range(1, n):
        starts = starts & equal[:, offset : offset + sources, offset : offset + queries]
    started = starts.any(-1)  # (B, S - n + 1)
    for offset in range(n):
        matched[:, offset : offset + sources] |= started
    return matched


class QueryMatch(nn.Module):
    """The vector added to the embedding of every source token that `query_matches` marks."""

    def __init__(self, config: QueryMatchConfig, dim: int) -> None:
        super().__init__()
        self.config = config
        self.vector = nn.Parameter(torch.zeros(dim))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, S, D): the vector where a token matches the query, zero elsewhere."""
        marks = query_matches(input_ids, attention_mask, self.config)
        return marks[..., None].to(self.vector.dtype) * self.vector
