"""The CPU paths of the Weaver model and loss, each against the PyTorch call it replaces, forward and backward in
bf16 as in training; the two sides of each run alternately in this process and report median milliseconds:

- loss: chunked label-smoothed cross-entropy (`weaver.tasks.loss`) against `F.cross_entropy` on upcast logits;
- attention: the written-out attention of `weaver.models.weaver.attention` against SDPA, at several key counts;
- dropout: `weaver.models.weaver.Dropout` against `F.dropout`;
- allocator: a weaver_small training step on a default-sized batch in a fresh process with and without
  `keep_freed_memory()` (glibc keeps freed blocks), with the page faults each step takes.

    python -m experiments.benchmarks.cpu_kernels [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from weaver.models.weaver import Dropout, attention, build_weaver
from weaver.tasks.loss import smoothed_cross_entropy
from weaver.utils.hardware import keep_freed_memory

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


def dropout(repeats: int, rows: int = 6000, width: int = 256) -> dict:
    weaver = Dropout(0.1).train()
    steps = {
        "weaver": backward_of(weaver, rows, width),
        "torch": backward_of(lambda x: F.dropout(x, 0.1, training=True), rows, width),
    }
    return {"shape": [rows, width], **median_ms(steps, repeats)}


def training_step_with(keep_freed: bool, steps: int = 12) -> dict:
    """In this process: ms and minor page faults per weaver_small step on 34 x 40 -> 34 x 40 tokens."""
    if keep_freed:
        keep_freed_memory()
    torch.manual_seed(0)
    model = build_weaver(8000, d_model=256, num_heads=4, num_encoder_layers=3, num_decoder_layers=3, ffn_dim=1024)
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    source, target = torch.randint(3, 8000, (34, 40)), torch.randint(3, 8000, (34, 40))
    mask = torch.ones_like(source, dtype=torch.bool)
    times, faults = [], []
    for _ in range(steps):
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(source, mask, target)
        smoothed_cross_entropy(logits.flatten(0, 1), target.flatten(), 0.1).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(1000 * (time.perf_counter() - start))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {
        "ms_per_step": round(statistics.median(times[2:]), 1),
        "page_faults_per_step": statistics.median(faults[2:]),
    }


def allocator(rounds: int = 2) -> dict:
    """Each setting in fresh processes (the glibc setting cannot be undone), alternating."""
    results: dict[str, list[dict]] = {"keep_freed_memory": [], "glibc_default": []}
    for _ in range(rounds):
        for name in results:
            command = [sys.executable, "-m", __spec__.name, "--step", name]
            finished = subprocess.run(command, capture_output=True, text=True, check=True)
            results[name].append(json.loads(finished.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--step", choices=["keep_freed_memory", "glibc_default"], help="one allocator measurement")
    options = parser.parse_args()
    if options.step:
        print(json.dumps(training_step_with(options.step == "keep_freed_memory")))
        return
    torch.manual_seed(0)
    report = {
        "threads": torch.get_num_threads(),
        "loss_ms": loss(options.repeats),
        "attention_ms": attention_paths(options.repeats),
        "dropout_ms": dropout(options.repeats),
        "allocator": allocator(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
