"""Label-smoothed cross-entropy over a large vocabulary, computed in row chunks.

`F.cross_entropy` on (tokens, vocabulary) logits first needs them in float32 (a full copy for bf16 logits), then
makes several passes over the whole matrix forward and again backward. Here each chunk of rows is upcast, scored and
turned into its gradient while it is in cache; backward only scales the stored gradient. On a 2-core CPU, for
6,000 bf16 rows of 8,000 logits, that is about 2.6 times faster than `F.cross_entropy(logits.float(), ...)`
(experiments/benchmarks/README.md). The value and gradient equal it to float32 rounding (tests/tasks/test_loss.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ROWS_PER_CHUNK = 64  # 64 x 8,000 float32 logits = 2 MB: stays in cache across the passes below
# Evaluation upcasts this many rows at a time: large enough that the loop costs nothing, small enough that the
# float32 copy and its log-softmax stay a few MB whatever the eval batch.
EVAL_ROWS_PER_CHUNK = 1024


class _SmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor, smoothing: float, ignore_index: int) -> Tensor:
        vocabulary = logits.size(-1)
        keep = labels.ne(ignore_index)
        targets = labels.masked_fill(~keep, 0)[:, None]
        count = keep.sum().clamp(min=1)
        grad = torch.empty_like(logits)
        total = logits.new_zeros((), dtype=torch.float32)
        for start in range(0, logits.size(0), ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            shifted = logits[rows].to(torch.float32, copy=True)  # float32 logits: a copy, never the input
            shifted -= shifted.amax(-1, keepdim=True)
            exp = shifted.exp()
            sums = exp.sum(-1, keepdim=True)
            log_norm = sums.log()
            # -log p(target) and -mean_v log p(v), both from logits shifted by their row maximum.
            target_nll = log_norm - shifted.gather(1, targets[rows])
            uniform_nll = log_norm - shifted.mean(-1, keepdim=True)
            weight = keep[rows, None].float()
            total += (((1.0 - smoothing) * target_nll + smoothing * uniform_nll) * weight).sum()
            # d loss / d logits: (softmax - (1 - e) one_hot(target) - e / V) / count.
            probs = exp.div_(sums).sub_(smoothing / vocabulary)
            probs.scatter_add_(1, targets[rows], torch.full_like(target_nll, smoothing - 1.0))
            grad[rows] = probs.mul_(weight / count)
        ctx.save_for_backward(grad)
        return total / count

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None, None]:
        (grad,) = ctx.saved_tensors
        # The loss is usually the end of the graph: its gradient is 1, and a pass over the gradient is saved.
        if grad_output.device.type == "cpu" and grad_output.item() == 1.0:
            return grad, None, None, None
        return grad * grad_output.to(grad.dtype), None, None, None


def smoothed_cross_entropy(logits: Tensor, labels: Tensor, smoothing: float = 0.0, ignore_index: int = -100) -> Tensor:
    """Mean label-smoothed cross-entropy of `logits` (N, V), any float dtype, over the `labels` (N,) that are not
    `ignore_index`: what `F.cross_entropy(logits.float(), labels, ignore_index=..., label_smoothing=...)` gives."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, V) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return _SmoothedCrossEntropy.apply(logits, labels, smoothing, ignore_index)


def example_nll(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Float32 cross-entropy of `logits` (B, T, V) summed over each example's `labels` (B, T) that are not
    `ignore_index`: (B,), the evaluation loss of each example. `F.cross_entropy(logits.float(), ...)` in one piece
    would hold two float32 copies of an eval batch's logits at once (the upcast and its log-softmax); here a chunk
    of rows at a time."""
    flat_logits, flat_labels = logits.flatten(0, 1), labels.flatten()
    token_nll = torch.empty(flat_labels.shape, dtype=torch.float32, device=logits.device)
    for start in range(0, flat_labels.numel(), EVAL_ROWS_PER_CHUNK):
        rows = slice(start, start + EVAL_ROWS_PER_CHUNK)
        token_nll[rows] = F.cross_entropy(
            flat_logits[rows].float(), flat_labels[rows], ignore_index=ignore_index, reduction="none"
        )
    return token_nll.view(labels.shape).sum(1)


def relevance_loss(
    scores: list[Tensor],
    relevant: Tensor,
    target_mask: Tensor,
    ignored: Tensor | None = None,
    heads: Sequence[int] | None = None,
) -> Tensor:
    """How far the decoder's cross-attention is from the source tokens a target comes from: -log of the attention
    mass on ``relevant`` (B, S) tokens, averaged over heads as probabilities (a head may look elsewhere if others
    look there), then over the real target positions of ``target_mask`` (B, T) and over layers. ``scores`` holds
    each layer's float scores (B, H, T, S), -inf on padding. Tokens in ``ignored`` (B, S) are left out of the
    softmax: attention on them is neither asked for nor penalised. Rows with no relevant token take no part.
    ``heads``: the indices of the heads supervised in every layer (None: all), so the others stay free to read
    what the supervised ones do not (the query, the context of the output).

    Top-k recall trains only the entries a query fetched; this reaches every memory entry, so a relevant one that
    ranked too low to be fetched is pulled up rather than never seen."""
    rows = relevant.any(1)
    if not rows.any():
        return scores[0].new_zeros(())
    relevant, weights = relevant[rows], target_mask[rows].float()
    losses = []
    for layer in scores:
        layer = layer[rows]  # never a row of -inf alone: its gradient would be NaN
        if heads is not None:
            layer = layer[:, list(heads)]
        if ignored is not None:
            layer = layer.masked_fill(ignored[rows][:, None, None, :] & ~relevant[:, None, None, :], float("-inf"))
        inside = layer.masked_fill(~relevant[:, None, None, :], float("-inf")).logsumexp(-1)
        log_mass = inside - layer.logsumexp(-1)  # (B, H, T): log of each head's mass on the relevant tokens
        mixed = log_mass.logsumexp(1) - math.log(layer.size(1))  # (B, T): of the heads' average
        losses.append(-(mixed * weights).sum() / weights.sum().clamp(min=1))
    return torch.stack(losses).mean()
