"""The pointer-generator output distribution (`CopyAttention`), computed a chunk of rows at a time.

    log P(v) = log(g * softmax(z)_v + (1 - g) * C_v)

for vocabulary logits z, g = sigmoid(gate) the probability of generating, and C the copy distribution, which is
nonzero only at the S source tokens of the row. Everywhere else log P(v) = z_v - logsumexp(z) + log g, so each row
is one log-softmax plus a correction at S entries. Written with tensor operations over the whole (rows, vocabulary)
matrix that takes about ten passes forward and backward; here each chunk of rows is upcast, normalised, corrected
and (backward) differentiated while it is in cache: one pass over the logits forward, two backward.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

ROWS_PER_CHUNK = 64
TINY = torch.finfo(torch.float32).tiny


class _PointerMixture(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, gate: Tensor, copied: Tensor, ids: Tensor, real: Tensor, unique: Tensor
    ) -> Tensor:
        out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        log_norm = torch.empty(logits.size(0), 1, dtype=torch.float32, device=logits.device)
        generated_at = torch.empty(copied.shape, dtype=torch.float32, device=logits.device)  # g * softmax at ids
        for start in range(0, logits.size(0), ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            chunk = out[rows].copy_(logits[rows])  # upcast straight into the output
            log_norm[rows] = chunk.logsumexp(-1, keepdim=True) - F.logsigmoid(gate[rows])
            chunk -= log_norm[rows]  # log(g * softmax)
            log_generated = chunk.gather(1, ids[rows])
            generated_at[rows] = log_generated.exp()
            mixed = (generated_at[rows] + (1.0 - torch.sigmoid(gate[rows])) * copied[rows]).clamp_min(TINY).log()
            chunk.scatter_(1, ids[rows], torch.where(real[rows], mixed, log_generated))
        ctx.save_for_backward(logits, gate, copied, ids, real, unique, log_norm, generated_at)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        logits, gate, copied, ids, real, unique, log_norm, generated_at = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        grad_gate = torch.empty_like(gate)
        grad_copied = torch.empty_like(copied)
        for start in range(0, logits.size(0), ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            g = torch.sigmoid(gate[rows])
            grad = grad_out[rows]
            grad_at = grad.gather(1, ids[rows])
            mixed = (generated_at[rows] + (1.0 - g) * copied[rows]).clamp_min(TINY)
            # d log P(v) / d z = share_v * (onehot(v) - softmax(z)), share_v = g softmax_v / P(v) at the source's
            # tokens (1 elsewhere): so d/dz = a - softmax * sum(a), with a = grad * share.
            scaled_at = torch.where(real[rows], grad_at * generated_at[rows] / mixed, grad_at)
            counted = unique[rows] & real[rows]  # each source token once
            total = grad.sum(-1, keepdim=True) + ((scaled_at - grad_at) * counted).sum(-1, keepdim=True)
            softmax = (logits[rows].float() - log_norm[rows]).exp_().div_(g)
            softmax_at = generated_at[rows] / g
            dense = grad - softmax * total
            grad_logits[rows] = dense.scatter_(1, ids[rows], scaled_at - softmax_at * total)
            # d log P / d gate: (1 - g) off the source's tokens; (softmax - C) g (1 - g) / P(v) at them.
            outside = (grad.sum(-1, keepdim=True) - (grad_at * counted).sum(-1, keepdim=True)) * (1.0 - g)
            inside = (grad_at * (softmax_at - copied[rows]) * g * (1.0 - g) / mixed * counted).sum(-1, keepdim=True)
            grad_gate[rows] = outside + inside
            # d log P(v) / d C_v = (1 - g) / P(v), once per source token (its first position).
            grad_copied[rows] = torch.where(counted, grad_at * (1.0 - g) / mixed, 0.0)
        return grad_logits, grad_gate, grad_copied, None, None, None


@torch.compiler.disable
def pointer_mixture(logits: Tensor, gate: Tensor, copied: Tensor, ids: Tensor, real: Tensor, unique: Tensor) -> Tensor:
    """Float32 log-probabilities (R, V) of the mixture, for R rows: `logits` (R, V) in any float dtype; `gate`
    (R, 1) float32, logit of P(generate); per source position (R, S): `copied` the copy probability of its token
    (summed over the token's positions), `ids` its token id, `real` False on padding, `unique` True at each token's
    first position.

    Runs eagerly under `torch.compile` (`task.compile=true`): traced, its loop over chunks of rows would be unrolled
    into one generated C++ function per batch shape, tens of thousands of lines that took the compiler minutes."""
    return _PointerMixture.apply(logits, gate, copied, ids, real, unique)
