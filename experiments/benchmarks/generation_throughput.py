"""Generation throughput: Weaver's beam search against HF `generate` on a BART of equal dimensions.

Both models are randomly initialised and forced to the same output length (`min_new_tokens = max_new_tokens`, so
EOS never ends a hypothesis early): the same batches of test sources, the same beam count and length, the same
precision, so both produce exactly the same number of tokens and the ratio compares the search loops alone. Each
measurement is a fresh process (`--system`), the two alternating over the rounds (Weaver HF, HF Weaver, ...); each
reports generated tokens per second after one warm-up batch, and the report each round's ratio, their median and
range against the 2x target.

    python -m experiments.benchmarks.generation_throughput [--rounds 5] [--batch-size 32] [--num-beams 4]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from experiments.benchmarks.workload import (
    BENCHMARK_RUN,
    MODEL,
    alternate,
    compose_config,
    datamodule,
    equal_size_bart,
    ratio_summary,
)
from weaver.data.collate import Seq2SeqCollator
from weaver.instantiate import build_model
from weaver.utils.hardware import compute_dtype

Generate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def test_batches(overrides: list[str], batch_size: int, count: int) -> tuple[list[dict], object]:
    """The first `count` batches of the test split, in file order, padded per batch."""
    cfg = compose_config([*BENCHMARK_RUN, *overrides])
    data = datamodule(cfg)
    test = data.datasets["test"]
    collate = Seq2SeqCollator(data.tokenizer.pad_token_id)
    batches = [collate([test[i] for i in range(s, s + batch_size)]) for s in range(0, batch_size * count, batch_size)]
    return batches, cfg, data.tokenizer


def tokens_per_second(generate: Generate, batches: list[dict], dtype: torch.dtype, new_tokens: int) -> float:
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        generate(batches[0]["input_ids"], batches[0]["attention_mask"])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            output = generate(batch["input_ids"], batch["attention_mask"])
            assert output.size(1) >= new_tokens, output.shape
        seconds = time.perf_counter() - start
    return sum(batch["input_ids"].size(0) for batch in batches) * new_tokens / seconds


SYSTEMS = ["weaver", "hf_bart"]
TARGET = 2.0


def measure(system: str, options: argparse.Namespace) -> float:
    overrides = ["hardware=cpu", f"trainer.precision={options.precision}", *MODEL, *options.overrides]
    batches, cfg, tokenizer = test_batches(overrides, options.batch_size, options.batches)
    length = options.max_new_tokens
    decoding = {"num_beams": options.num_beams, "max_new_tokens": length, "min_new_tokens": length}
    torch.manual_seed(cfg.seed)
    if system == "weaver":
        weaver = build_model(cfg, tokenizer).eval()
        generate: Generate = lambda ids, mask: weaver.generate(ids, mask, **decoding)  # noqa: E731
    else:
        bart = equal_size_bart(cfg, tokenizer).eval()
        bart.generation_config.update(early_stopping=False, no_repeat_ngram_size=0, length_penalty=1.0, do_sample=False)
        generate = lambda ids, mask: bart.generate(input_ids=ids, attention_mask=mask.long(), **decoding)  # noqa: E731
    return tokens_per_second(generate, batches, compute_dtype(options.precision), length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=SYSTEMS, help="measure one, in this process")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. model=weaver_base")
    options = parser.parse_args()
    if options.system:
        print(json.dumps({"tokens_per_sec": round(measure(options.system, options), 1)}))
        return
    arguments = [
        f"--batch-size={options.batch_size}",
        f"--batches={options.batches}",
        f"--num-beams={options.num_beams}",
        f"--max-new-tokens={options.max_new_tokens}",
        f"--precision={options.precision}",
        *options.overrides,
    ]
    results = alternate(__spec__.name, SYSTEMS, options.rounds, arguments)
    speeds = {system: [r["tokens_per_sec"] for r in rounds] for system, rounds in results.items()}
    ratios = [w / h for w, h in zip(speeds["weaver"], speeds["hf_bart"], strict=True)]
    report = {
        "generated_tokens_per_sec": speeds,
        "weaver_over_hf": ratio_summary(ratios, TARGET),
        "settings": {"num_beams": options.num_beams, "new_tokens": options.max_new_tokens},
        "batching": {"batch_size": options.batch_size, "batches": options.batches},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
