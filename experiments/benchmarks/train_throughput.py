"""Training throughput: Weaver against HuggingFace BART and T5 of equal dimensions under `Seq2SeqTrainer`.

Two comparisons, each against both HF models:

- **model speed** (`bart_same`, `t5_same`): HF trains on the very batches Weaver's loop trains on, the token-budget
  batches of Weaver's training loader (the same seed, so the same order), given to `Seq2SeqTrainer` as its train
  dataloader; padding and tokens per step are then the same on both sides and the ratio compares the training steps.
- **the platform as users run it** (`bart_own`, `t5_own`): each side at its best documented setting. Weaver: its
  token-budget batches of `data.max_tokens`. HF: `train_sampling_strategy="group_by_length"` with the batch size
  equal to the mean number of examples in a Weaver batch (about the same examples per step).

All train on the same tokenized default translation data and vocabulary (`model=weaver_small`: the task's own
8,000-token BPE), in the same precision, with the fused AdamW, label smoothing 0.1 and clipping at 1.0. Dropout
sits in the same places: 0.1 on the embeddings and on each sub-layer's output before its residual sum, none on
attention probabilities or inside the feed-forward block (BART: `attention_dropout=activation_dropout=0`; T5's
feed-forward and attention-probability dropouts are switched off; its stack's one dropout after the final layer
norm stays). Throughput is real (non-pad) source + target tokens per second over the steps after a warm-up.

Each measurement is a fresh process (`--system NAME`); the five systems rotate their order over the rounds
(`workload.round_order`), and each round's Weaver run is the numerator of that round's four ratios.

    python -m experiments.benchmarks.train_throughput [--rounds 5] [--steps 50] [--warmup 8] [train.py overrides]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections import deque
from collections.abc import Iterable

import lightning as L
import torch
import transformers
from torch.utils.data import DataLoader
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
)

from experiments.benchmarks.workload import (
    BENCHMARK_RUN,
    MODEL,
    alternate,
    compose_config,
    datamodule,
    equal_size_bart,
    equal_size_t5,
    ratio_summary,
    real_tokens,
    timed_train,
)

SYSTEMS = ["weaver", "bart_same", "t5_same", "bart_own", "t5_own"]
TARGET = 1.3


class HFTokenClock(TrainerCallback):
    """Real tokens and seconds over the `Seq2SeqTrainer` steps after `warmup`. The collator queues each batch's real
    tokens as it builds it (`count`), which may be a batch ahead of the step being trained; the step's end takes the
    oldest."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.tokens, self.steps, self.start, self.seconds = warmup, 0, 0, 0.0, 0.0
        self.queued: deque[int] = deque()

    def count(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.queued.append(real_tokens(batch["attention_mask"], batch["labels"]))
        return batch

    def on_step_begin(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        if state.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        tokens = self.queued.popleft()
        if state.global_step > self.warmup:  # global_step is already this step's number, counted from 1
            self.tokens, self.steps = self.tokens + tokens, self.steps + 1

    def on_train_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001
        self.seconds = time.perf_counter() - self.start


class GivenBatchesTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` that trains on `batches` (lists of example indices), in their order."""

    def __init__(self, *args, batches: Iterable[list[int]], **kwargs) -> None:  # noqa: ANN002
        super().__init__(*args, **kwargs)
        self.batches = batches

    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(self.train_dataset, batch_sampler=self.batches, collate_fn=self.data_collator)
        return self.accelerator.prepare(loader)


def matched_dropout(model: PreTrainedModel) -> PreTrainedModel:
    """T5 drops out inside each feed-forward block and on attention probabilities too; Weaver and BART (as
    `equal_size_bart` sets it) do neither. Switched off here, so every side drops out in the same places."""
    for module in model.modules():
        name = type(module).__name__
        if name.startswith("T5Dense"):
            module.dropout.p = 0.0
        elif name == "T5Attention":
            module.dropout = 0.0
    return model


def hf_throughput(family: str, feeding: str, overrides: list[str], steps: int, warmup: int) -> dict[str, float]:
    cfg = compose_config([*BENCHMARK_RUN, *overrides])
    L.seed_everything(cfg.seed)  # as train() does: Weaver's loader then orders its batches the same way
    data = datamodule(cfg)
    tokenizer = data.tokenizer
    model = matched_dropout((equal_size_bart if family == "bart" else equal_size_t5)(cfg, tokenizer))
    train_split = data.datasets["train"].select_columns(["input_ids", "labels"])
    clock = HFTokenClock(warmup)
    collate = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    weaver_batches = data.batch_sampler("train", shuffle=True, num_replicas=1, rank=0)
    mean_batch_size = round(len(train_split) / len(weaver_batches))
    args = Seq2SeqTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="weaver-benchmark-hf-"),
        per_device_train_batch_size=mean_batch_size,
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
        bf16=str(cfg.trainer.precision).startswith("bf16"),
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
    )
    common = {
        "model": model,
        "args": args,
        "train_dataset": train_split,
        "data_collator": lambda features: clock.count(collate(features)),
        "processing_class": tokenizer,
        "callbacks": [clock],
    }
    trainer = GivenBatchesTrainer(**common, batches=weaver_batches) if feeding == "same" else Seq2SeqTrainer(**common)
    trainer.train()
    return {"tokens_per_sec": clock.tokens / clock.seconds, "steps": clock.steps, "batch_size": mean_batch_size}


def weaver_throughput(overrides: list[str], steps: int, warmup: int) -> dict[str, float]:
    measured = timed_train(overrides, steps, warmup)
    return {"tokens_per_sec": measured.tokens / measured.seconds, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=SYSTEMS, help="measure one, in this process")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. model=weaver_base data.max_tokens=6000")
    options = parser.parse_args()
    hardware = "hardware=cpu" if not torch.cuda.is_available() else "hardware=gpu"
    overrides = [hardware, f"trainer.precision={options.precision}", *MODEL, *options.overrides]
    if options.system:
        logging.getLogger("lightning").setLevel(logging.WARNING)
        transformers.logging.set_verbosity_error()
        if options.system == "weaver":
            measured = weaver_throughput(overrides, options.steps, options.warmup)
        else:
            family, feeding = options.system.split("_")
            measured = hf_throughput(family, feeding, overrides, options.steps, options.warmup)
        print(json.dumps(measured))
        return
    arguments = [f"--steps={options.steps}", f"--warmup={options.warmup}", f"--precision={options.precision}"]
    results = alternate(__spec__.name, SYSTEMS, options.rounds, [*arguments, *options.overrides])
    speeds = {system: [round(r["tokens_per_sec"], 1) for r in rounds] for system, rounds in results.items()}
    ratios = {
        f"weaver_over_{system}": ratio_summary(
            [w / h for w, h in zip(speeds["weaver"], speeds[system], strict=True)], TARGET
        )
        for system in SYSTEMS[1:]
    }
    report = {
        "tokens_per_sec": speeds,
        "ratios": ratios,
        "hf_batch_size_own": results["bart_own"][0]["batch_size"],
        "overrides": overrides,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
