"""The CPU paths of the Weaver model and loss, each against the PyTorch call it replaces, forward and backward in
bf16 as in training; the two sides of each run alternately in this process and report median milliseconds:

- loss: chunked label-smoothed cross-entropy (`weaver.tasks.loss`) against `F.cross_entropy` on upcast logits;
- attention: the written-out attention of `weaver.models.kernels.attention` against SDPA, at several key counts;
- decoding cache, one beam-search step: `LayerCache`'s reorder-then-extend (one gathering copy) against gathering
  the surviving beams' keys/values with `index_select` and appending the new position with `torch.cat`;
- dropout: `weaver.models.kernels.Dropout` against `F.dropout`;
- pointer mixture: copy attention's chunked output distribution (`weaver.models.pointer_mixture`) against the same
  mixture written with whole-matrix tensor operations;
- n-gram blocking, a decoding step (float32 scores, no backward): `weaver.generation.ban_repeated_ngrams_` against
  a (rows, vocabulary) mask of the banned tokens applied with `masked_fill_`.

    python -m experiments.benchmarks.cpu_kernels [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from weaver.generation import ban_repeated_ngrams_
from weaver.models.kernels import Dropout, attention
from weaver.models.pointer_mixture import pointer_mixture
from weaver.models.weaver import LayerCache
from weaver.tasks.loss import smoothed_cross_entropy

Step = Callable[[], None]


def median_ms(steps: dict[str, Step], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats + 1):  # the first round warms up
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: round(statistics.median(values[1:]), 2) for name, values in times.items()}


def backward_of(function: Callable[[torch.Tensor], torch.Tensor], *shape: int) -> Step:
    leaf = torch.randn(*shape).to(torch.bfloat16).requires_grad_()
    return lambda: function(leaf).float().sum().backward()


def loss(repeats: int, tokens: int = 6000, vocabulary: int = 8000) -> dict:
    labels = torch.randint(0, vocabulary, (tokens,))
    labels[::10] = -100  # some padding, as in a batch
    steps = {
        "weaver": backward_of(lambda x: smoothed_cross_entropy(x, labels, 0.1), tokens, vocabulary),
        "torch": backward_of(lambda x: F.cross_entropy(x.float(), labels, label_smoothing=0.1), tokens, vocabulary),
    }
    return {"logits": [tokens, vocabulary], **median_ms(steps, repeats)}


ATTENTION = {"written_out": attention, "sdpa": F.scaled_dot_product_attention}


def causal_backward(function: Callable[..., torch.Tensor], qkv: list[torch.Tensor]) -> Step:
    return lambda: function(*qkv, is_causal=True).float().sum().backward()


def attention_paths(repeats: int, batch: int = 40, heads: int = 8, head_dim: int = 64) -> list[dict]:
    rows = []
    for keys in (30, 60, 120, 190):  # attention() writes it out up to CPU_EXPLICIT_ATTENTION_MAX_KEYS
        qkv = [torch.randn(batch, heads, keys, head_dim).to(torch.bfloat16).requires_grad_() for _ in range(3)]
        steps = {name: causal_backward(function, qkv) for name, function in ATTENTION.items()}
        rows.append({"keys": keys, **median_ms(steps, repeats)})
    return rows


def cache_step(repeats: int, rows: int = 3200, heads: int = 4, head_dim: int = 48, length: int = 30) -> dict:
    """One decoder layer's self-attention cache at a beam-search step: 200 sources x 16 beams, 30 tokens written."""
    past = torch.randn(2, rows, heads, length, head_dim).to(torch.bfloat16)
    new = torch.randn(2, rows, heads, 1, head_dim).to(torch.bfloat16)
    beams = torch.randint(0, rows, (rows,))

    def weaver() -> torch.Tensor:
        cache = LayerCache(self_kv=past)
        cache.reorder(beams)
        return cache.extend(new)

    def gather_then_append() -> torch.Tensor:
        return torch.cat([past.index_select(1, beams), new], dim=3)

    assert torch.equal(weaver(), gather_then_append())
    steps = {"weaver": weaver, "torch": gather_then_append}
    return {"keys_values": list(past.shape), **median_ms(steps, repeats)}


def dropout(repeats: int, rows: int = 6000, width: int = 256) -> dict:
    weaver = Dropout(0.1).train()
    steps = {
        "weaver": backward_of(weaver, rows, width),
        "torch": backward_of(lambda x: F.dropout(x, 0.1, training=True), rows, width),
    }
    return {"shape": [rows, width], **median_ms(steps, repeats)}


def dense_mixture(logits: torch.Tensor, gate: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log(g * softmax(logits) + (1 - g) * copy), the copy distribution scattered over the whole vocabulary."""
    generate = torch.sigmoid(gate)
    copied = torch.zeros(logits.shape).scatter_add_(1, ids, weights)
    return (generate * logits.float().softmax(-1) + (1.0 - generate) * copied).clamp_min(1e-12).log()


def mixture(repeats: int, rows: int = 2000, vocabulary: int = 8000, source: int = 64) -> dict:
    gate = torch.randn(rows, 1).requires_grad_()
    weights = torch.randn(rows, source).softmax(-1).requires_grad_()
    ids = torch.randint(4, vocabulary, (rows, source))
    first = (ids[:, :, None] == ids[:, None, :]).to(torch.uint8).argmax(-1)
    real, unique = torch.ones_like(ids, dtype=torch.bool), first == torch.arange(source)

    def weaver(logits: torch.Tensor) -> torch.Tensor:  # the copy weights summed per token, as CopyAttention does
        copied = torch.zeros_like(weights).scatter_add(1, first, weights).gather(1, first)
        return pointer_mixture(logits, gate, copied, ids, real, unique)

    steps = {
        "weaver": backward_of(weaver, rows, vocabulary),
        "torch": backward_of(lambda x: dense_mixture(x, gate, weights, ids), rows, vocabulary),
    }
    return {"logits": [rows, vocabulary], "source_tokens": source, **median_ms(steps, repeats)}


def dense_ngram_ban(scores: torch.Tensor, tokens: torch.Tensor, n: int) -> None:
    """The banned next tokens marked in a (rows, vocabulary) mask, then filled with -inf."""
    ngrams = tokens.unfold(1, n, 1)
    matches = (ngrams[:, :, :-1] == tokens[:, tokens.size(1) - n + 1 :][:, None]).all(-1)
    banned = torch.zeros(scores.shape).scatter_add_(1, ngrams[:, :, -1], matches.float()) > 0
    scores.masked_fill_(banned, float("-inf"))


def ngram_ban(repeats: int, rows: int = 3200, vocabulary: int = 8000, length: int = 30, n: int = 3) -> dict:
    """One beam-search step's trigram blocking: 200 sources x 16 beams, 30 tokens written, as on the dialogue data."""
    scores = torch.randn(rows, vocabulary)
    tokens = torch.randint(4, 40, (rows, length))  # a small alphabet, so that some trigrams repeat
    weaver, dense = scores.clone(), scores.clone()
    ban_repeated_ngrams_(weaver, tokens, n)
    dense_ngram_ban(dense, tokens, n)
    assert torch.equal(weaver, dense) and weaver.isneginf().any()
    steps = {
        "weaver": lambda: ban_repeated_ngrams_(scores, tokens, n),
        "torch": lambda: dense_ngram_ban(scores, tokens, n),
    }
    return {"scores": [rows, vocabulary], "tokens_so_far": length, "n": n, **median_ms(steps, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    options = parser.parse_args()
    torch.manual_seed(0)
    report = {
        "threads": torch.get_num_threads(),
        "loss_ms": loss(options.repeats),
        "attention_ms": attention_paths(options.repeats),
        "decoding_cache_ms": cache_step(options.repeats),
        "dropout_ms": dropout(options.repeats),
        "pointer_mixture_ms": mixture(options.repeats),
        "ngram_ban_ms": ngram_ban(options.repeats),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
