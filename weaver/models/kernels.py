"""CPU and GPU kernels the native model runs on: softmax attention routed to the fastest correct path for the
device and mode, and a cheaper dropout for the CPU. Both measured in experiments/benchmarks/README.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

# Up to this many keys, attention written out as two bf16 matrix products around a float32 softmax trains faster on
# the CPU than SDPA's fused kernels, whose backward is slow there; beyond, and wherever no gradient is needed
# (evaluation, decoding), SDPA is as fast or faster.
CPU_EXPLICIT_ATTENTION_MAX_KEYS = 192
# SDPA backends for masked attention that needs a gradient on a GPU: all but cuDNN's, torch's choice there on an H200,
# where it trained far slower and its loss turned NaN; cuDNN's backward is known to return NaN for some masked inputs
# (pytorch/pytorch#196678).
MASKED_TRAINING_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False, dropout: float = 0.0
) -> Tensor:
    """Softmax attention (B, H, T, D/H); ``mask`` is True where a query may attend to a key."""
    training = torch.is_grad_enabled() and q.requires_grad
    if q.device.type == "cuda" and training and mask is not None:
        with sdpa_kernel(MASKED_TRAINING_SDPA_BACKENDS):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)
    if q.device.type != "cpu" or not training or k.size(-2) > CPU_EXPLICIT_ATTENTION_MAX_KEYS:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)
    scores = (q @ k.transpose(-1, -2)).float() * q.size(-1) ** -0.5
    if is_causal:
        scores = scores.masked_fill(torch.ones_like(scores[0, 0], dtype=torch.bool).triu(1), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.dropout(scores.softmax(-1), dropout, training=dropout > 0)
    return weights.to(v.dtype) @ v


class Dropout(nn.Module):
    """`nn.Dropout`. On the CPU, where `F.dropout` draws one random number per element, the keep mask compares 16-bit
    lanes of 64-bit random words against `p`: a quarter of the draws, the same distribution to 1/65,536 (speed in
    experiments/benchmarks/README.md). Seeded by torch's generator as usual."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        # P(lane >= threshold) = 1 - round(p * 65536) / 65536: scaling by its inverse keeps the mean exactly.
        self.threshold = round(p * 65536) - 32768
        self.scale = 65536 / (65536 - round(p * 65536))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training)
        count = x.numel()
        words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        keep = words.view(torch.int16)[:count].view(x.shape) >= self.threshold
        return x * (keep.to(x.dtype) * self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"
