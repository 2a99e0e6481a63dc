"""Sampling whose draws belong to each output, not to the batch.

One random generator over a batch gives a source different samples alone, beside other sources, at another row,
or as the batch shrinks while sources finish: a seeded evaluation would change with its batch size. Here each
output row has a stream of its own, keyed by the seed, its source's tokens and its sample's index (MBR draws
several), and each step takes one number from it: a counter-based hash, so no state follows the rows around.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from weaver.generation.config import GenerationConfig

NEG_INF = float("-inf")
MASK64 = (1 << 64) - 1


def splitmix64(value: int) -> int:
    """A 64-bit integer hash (Steele et al.'s SplitMix64 finaliser): neighbouring inputs give unrelated outputs."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Set logits outside the ``top_k`` most likely tokens / the ``top_p`` nucleus to -inf."""
    if top_k > 0:
        kth_best = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the more likely tokens already reach top_p
        logits = logits.masked_fill(torch.zeros_like(outside).scatter(1, order, outside), NEG_INF)
    return logits


class RowStreams:
    """A random stream per output row of a batch whose ``per_source`` consecutive rows share a source. Unseeded
    (`config.seed` None), the key's base comes from torch's global generator, so `seed_everything` still repeats
    a run."""

    def __init__(self, config: GenerationConfig, input_ids: Tensor, attention_mask: Tensor, per_source: int) -> None:
        self.config = config
        base = config.seed if config.seed is not None else int(torch.randint(2**62, ()).item())
        self.keys: list[int] = []
        for ids, real in zip(input_ids.tolist(), attention_mask.bool().tolist(), strict=True):
            tokens = [token for token, keep in zip(ids, real, strict=True) if keep]
            digest = hashlib.blake2b(repr((base, tokens)).encode(), digest_size=8).digest()
            source = int.from_bytes(digest, "little")
            self.keys.extend(splitmix64(source ^ splitmix64(sample)) for sample in range(per_source))

    def uniforms(self, rows: list[int], step: int, device: torch.device) -> Tensor:
        """One number in [0, 1) per row for decoding step ``step`` (float64, 53 random bits each)."""
        salt = splitmix64(step + (1 << 32))
        values = [(splitmix64(self.keys[row] ^ salt) >> 11) * 2.0**-53 for row in rows]
        return torch.tensor(values, dtype=torch.float64, device=device)

    def choose(self, logits: Tensor, rows: list[int], step: int) -> Tensor:
        """The next token (N,) of each row, drawn from its tempered, top-k/top-p filtered distribution by inverting
        the distribution's cumulative sum at the row's number (a zero-probability token is never drawn)."""
        config = self.config
        probs = filter_logits(logits.float() / config.temperature, config.top_k, config.top_p).softmax(-1)
        cumulative = probs.double().cumsum(-1)
        targets = self.uniforms(rows, step, logits.device) * cumulative[:, -1]
        chosen = torch.searchsorted(cumulative, targets[:, None], right=True).squeeze(1)
        return chosen.clamp_(max=logits.size(-1) - 1)
