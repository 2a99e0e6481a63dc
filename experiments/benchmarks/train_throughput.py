"""Training throughput: Weaver against HuggingFace BART and T5 of equal dimensions under `Seq2SeqTrainer`.

All three train on the same tokenized default translation data (the embedded DDTP corpus, the same 8,000-token BPE
vocabulary), in the same precision, on the same machine, in this one process, one after another and then again in
the same order (the two rounds show drift). Each side runs at its best documented setting:

- Weaver: `train.py`'s own training loop (Lightning, token-budget batches of `data.max_tokens`, fused AdamW,
  chunked loss);
- HF: `Seq2SeqTrainer` with `train_sampling_strategy="group_by_length"`, the fused AdamW it defaults to, and
  `per_device_train_batch_size` set to the mean number of examples in a Weaver batch, so both take about the
  same number of examples per step.

Both use label smoothing 0.1, gradient clipping at 1.0 and dropout 0.1. Throughput is real (non-pad) source +
target tokens per second over the steps after a warm-up.

    python -m experiments.benchmarks.train_throughput [--steps 150] [--warmup 10] [--precision bf16-mixed]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections import deque

import torch
import transformers
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from experiments.benchmarks.workload import (
    BENCHMARK_RUN,
    compose_config,
    datamodule,
    equal_size_bart,
    equal_size_t5,
    real_tokens,
    timed_train,
)


class HFTokenClock(TrainerCallback):
    """Real tokens and seconds over the `Seq2SeqTrainer` steps after `warmup`; the collator queues each batch's
    real tokens as it builds it."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.tokens, self.start, self.seconds = warmup, 0, 0.0, 0.0
        self.queued: deque[int] = deque()

    def on_step_begin(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        if state.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        tokens = self.queued.popleft()
        if state.global_step > self.warmup:
            self.tokens += tokens

    def on_train_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        self.seconds = time.perf_counter() - self.start


def weaver_throughput(overrides: list[str], steps: int, warmup: int) -> dict[str, float]:
    measured = timed_train(overrides, steps, warmup)
    return {"tokens_per_sec": measured.tokens / measured.seconds, "seconds": measured.seconds}


def hf_throughput(family: str, overrides: list[str], steps: int, warmup: int, batch_size: int) -> dict[str, float]:
    cfg = compose_config([*BENCHMARK_RUN, *overrides])
    data = datamodule(cfg)
    tokenizer = data.tokenizer
    torch.manual_seed(cfg.seed)
    model = (equal_size_bart if family == "bart" else equal_size_t5)(cfg, tokenizer)
    train_split = data.datasets["train"].select_columns(["input_ids", "labels"])
    clock = HFTokenClock(warmup)
    collate = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)

    def counting_collate(features: list[dict]) -> dict:
        batch = collate(features)
        clock.queued.append(real_tokens(batch["attention_mask"], batch["labels"]))
        return batch

    precision = cfg.trainer.precision
    args = Seq2SeqTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="weaver-benchmark-hf-"),
        per_device_train_batch_size=batch_size,
        max_steps=warmup + steps,
        learning_rate=cfg.optimizer.lr,
        weight_decay=cfg.optimizer.weight_decay,
        adam_beta1=cfg.optimizer.betas[0],
        adam_beta2=cfg.optimizer.betas[1],
        warmup_steps=cfg.scheduler.num_warmup_steps,
        lr_scheduler_type="cosine",
        label_smoothing_factor=cfg.task.label_smoothing,
        max_grad_norm=cfg.trainer.gradient_clip_val,
        optim="adamw_torch_fused",
        train_sampling_strategy="group_by_length",
        bf16=str(precision).startswith("bf16"),
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train_split,
        data_collator=counting_collate,
        processing_class=tokenizer,
        callbacks=[clock],
    )
    trainer.train()
    return {"tokens_per_sec": clock.tokens / clock.seconds, "seconds": clock.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. model=weaver_base data.max_tokens=2000")
    options = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.WARNING)
    transformers.logging.set_verbosity_error()
    overrides = ["hardware=cpu" if not torch.cuda.is_available() else "hardware=gpu"]
    overrides += [f"trainer.precision={options.precision}", *options.overrides]

    data = datamodule(compose_config([*BENCHMARK_RUN, *overrides]))
    batches = data.batches("train")
    batch_size = round(sum(map(len, batches)) / len(batches))
    print(f"Weaver batches: {len(batches)} per epoch, {batch_size} examples on average (HF batch size).")

    results: dict[str, list[float]] = {"weaver": [], "bart": [], "t5": []}
    for round_index in range(options.rounds):
        for system in results:
            if system == "weaver":
                measured = weaver_throughput(overrides, options.steps, options.warmup)
            else:
                measured = hf_throughput(system, overrides, options.steps, options.warmup, batch_size)
            results[system].append(measured["tokens_per_sec"])
            print(f"round {round_index + 1} {system}: {measured['tokens_per_sec']:.0f} tokens/s", flush=True)
    summary = {system: sum(values) / len(values) for system, values in results.items()}
    summary["weaver_over_bart"] = summary["weaver"] / summary["bart"]
    summary["weaver_over_t5"] = summary["weaver"] / summary["t5"]
    print(json.dumps({"per_round": results, "mean": summary, "overrides": overrides}, indent=2))


if __name__ == "__main__":
    main()
