"""Recall: cross-attention in which each decoder query attends only to the `top_k` memory entries that score
highest for it (per layer and head), as Unlimiformer does, so a memory of tens of thousands of source tokens costs
each output step one score per entry and a softmax and value product over `top_k` of them.

Two layouts of the memory:
- `recall_attention` takes each layer's keys and values over the whole memory (computed once per source and cached
  by the caller during decoding): the scoring is the same matrix product full attention does.
- `folded_recall_attention` keeps one memory of encoder states for every layer and head. A query's score against a
  key, q . (W_k h + b_k), is (W_k^T q) . h plus a term that is the same for every key, which neither the ranking
  nor the softmax sees; so each layer folds its key projection into its queries, ranks the raw states, and projects
  only the `top_k` it fetched into keys and values. Stored: one (S, D) memory instead of 2 x layers of them.

Both are exact full cross-attention when `top_k` covers the memory. Gradients reach the queries and the keys and
values of the entries each query fetched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _top_k(scores: Tensor, mask: Tensor | None, top_k: int) -> tuple[Tensor, Tensor]:
    """The best ``top_k`` masked float scores (..., T, S) per query, and where they are."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.topk(min(top_k, scores.size(-1)), dim=-1, sorted=False)


def _gather_rows(values: Tensor, index: Tensor) -> Tensor:
    """``values`` (B, H or 1, S, E) at ``index`` (B, H, T, K): (B, H, T, K, E). Rows are picked from the flattened
    values by one index, so neither the values nor, in backward, their gradient is ever laid out per query (a
    gather over the values expanded to (B, H, T, S, E) would allocate that whole gradient)."""
    batch, heads, length, k = index.shape
    rows, width = values.size(-2), values.size(-1)
    base = torch.arange(batch, device=index.device)[:, None] * values.size(1)
    if values.size(1) > 1:  # one set of rows per head
        base = base + torch.arange(heads, device=index.device)[None, :]
    flat = (base[:, :, None, None] * rows + index).flatten()
    return values.reshape(-1, width)[flat].view(batch, heads, length, k, width)


def _attend(values: Tensor, scores: Tensor, dropout: float) -> Tensor:
    """Softmax of each query's (B, H, T) scores over its own K entries, applied to their values (B, H, T, K, d). A
    query with no real entry (an all-padding source) reads nothing, as full attention's does, rather than NaN."""
    weights = scores.softmax(-1).masked_fill(scores.isneginf().all(-1, keepdim=True), 0.0)
    weights = F.dropout(weights, dropout, training=dropout > 0)
    return (weights[..., None, :].to(values.dtype) @ values).squeeze(-2)


def recall_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    top_k: int,
    dropout: float = 0.0,
    scale: float | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """Top-k attention (B, H, T, d) of queries ``q`` over keys and values (B, H, S, d); ``mask`` (broadcast to
    (B, H, T, S)) is True on real memory entries; ``scale`` defaults to d^-0.5; ``bias`` is added to the scores
    (T5's position bias)."""
    scores = (q @ k.transpose(-1, -2)).float() * (q.size(-1) ** -0.5 if scale is None else scale)
    if bias is not None:
        scores = scores + bias
    best, index = _top_k(scores, mask, top_k)
    return _attend(_gather_rows(v, index), best, dropout)


def folded_recall_attention(
    q: Tensor,
    states: Tensor,
    key_weight: Tensor,
    key_bias: Tensor | None,
    value_weight: Tensor,
    value_bias: Tensor | None,
    mask: Tensor,
    top_k: int,
    dropout: float = 0.0,
) -> Tensor:
    """Top-k attention (B, H, T, d) of queries ``q`` over one memory of encoder ``states`` (B, S, D), the layer's
    key and value projections (weights (H * d, D), biases (H * d,)) applied to the fetched entries alone."""
    heads, width = q.size(1), q.size(-1)
    per_head_key = key_weight.view(heads, width, -1)  # (H, d, D)
    folded = (q @ per_head_key.to(q.dtype)).flatten(1, 2)  # (B, H * T, D): W_k^T q for each head
    # (B, H, T, S), up to a per-query constant; all heads in one product, so the states are read once, not per head
    scores = (folded @ states.transpose(1, 2).to(folded.dtype)).float().view(*q.shape[:3], -1)
    ranked, index = _top_k(scores, mask, top_k)
    fetched = _gather_rows(states[:, None], index)  # (B, H, T, K, D)

    def project(weight: Tensor, bias: Tensor | None) -> Tensor:  # -> (B, H, T, K, d)
        projected = fetched @ weight.view(heads, width, -1).transpose(1, 2)[None, :, None].to(fetched.dtype)
        return projected if bias is None else projected + bias.view(heads, 1, 1, width).to(projected.dtype)

    keys = project(key_weight, key_bias)
    scores = (q[..., None, :] @ keys.transpose(-1, -2)).squeeze(-2).float() * width**-0.5
    scores = scores.masked_fill(ranked.isneginf(), float("-inf"))  # padding fetched when top_k > real entries
    return _attend(project(value_weight, value_bias), scores, dropout)


def affine_parameters(layer: nn.Module, in_features: int) -> tuple[Tensor, Tensor]:
    """The weight (out, in) and bias (out,) of the affine map ``layer`` computes, for folding it into queries. A
    plain `nn.Linear` gives its own; one an adapter wraps (LoRA, IA3, AdaLoRA on the projection) is read off its
    outputs for zero and the unit vectors, so the adapter's update takes part and gets its gradients, as it does
    when the layer is called."""
    if type(layer) is nn.Linear:
        return layer.weight, layer.bias
    reference = next(layer.parameters())
    probe = torch.cat([torch.zeros(1, in_features), torch.eye(in_features)]).to(reference)
    outputs = layer(probe)
    return (outputs[1:] - outputs[0]).T.contiguous(), outputs[0]
