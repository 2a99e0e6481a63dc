"""Framework overhead: `train.py`'s Lightning training loop against a hand-written PyTorch loop.

Both train the same Weaver model from the same seed on the same batches (the data module's training loader), with
the same optimizer, schedule, precision, loss and gradient clipping. The Lightning side is the platform as a user
runs it, minus checkpoints and validation: the task module, logging, the Rich progress bar and the learning-rate
and throughput monitors. Runs alternate (raw, Lightning, raw, ...) so drift hits both; each reports seconds per step
over the steps after a warm-up.

    python -m experiments.benchmarks.lightning_overhead [--steps 150] [--rounds 3] [train.py overrides]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from experiments.benchmarks.workload import BENCHMARK_RUN, TokenClock, compose_config, datamodule
from weaver.cli.instantiate import build, build_model
from weaver.cli.train import train
from weaver.data.collate import LABEL_PAD
from weaver.tasks.loss import smoothed_cross_entropy
from weaver.tasks.seq2seq import shift_right
from weaver.utils.hardware import compute_dtype


def raw_loop(overrides: list[str], steps: int, warmup: int) -> float:
    """Seconds per step of a plain PyTorch loop doing what the task's training_step and Lightning's loop do."""
    cfg = compose_config([*BENCHMARK_RUN, *overrides])
    torch.manual_seed(cfg.seed)
    data = datamodule(cfg)
    tokenizer = data.tokenizer
    model = build_model(cfg, tokenizer).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = build(cfg.optimizer, "optimizer")(params=parameters)
    scheduler = build(cfg.scheduler, "scheduler")(optimizer, num_training_steps=warmup + steps)
    dtype = compute_dtype(cfg.trainer.precision)
    start = 0.0
    for step, batch in enumerate(data.train_dataloader()):
        if step == warmup:
            start = time.perf_counter()
        if step == warmup + steps:
            break
        decoder_input_ids = shift_right(batch["labels"], model.decoder_start_token_id, tokenizer.pad_token_id)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            logits = model(batch["input_ids"], batch["attention_mask"], decoder_input_ids)
        loss = smoothed_cross_entropy(
            logits.flatten(0, 1), batch["labels"].flatten(), cfg.task.label_smoothing, LABEL_PAD
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss)  # as Lightning reads the loss for its progress bar
    return (time.perf_counter() - start) / steps


def lightning_loop(overrides: list[str], steps: int, warmup: int) -> float:
    """Seconds per step of `train(cfg)`, timed by a callback over the same steps."""
    clock = [f"+callbacks.token_clock._target_={TokenClock.__module__}.TokenClock"]
    clock.append(f"+callbacks.token_clock.warmup={warmup}")
    cfg = compose_config([*BENCHMARK_RUN, f"trainer.max_steps={warmup + steps}", *clock, *overrides])
    _, objects = train(cfg)
    (measured,) = (callback for callback in objects["trainer"].callbacks if isinstance(callback, TokenClock))
    return measured.seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. model=weaver_base")
    options = parser.parse_args()
    overrides = ["hardware=cpu", "scheduler.num_warmup_steps=10", *options.overrides]
    raw, lightning = [], []
    for round_index in range(options.rounds):
        raw.append(raw_loop(overrides, options.steps, options.warmup))
        lightning.append(lightning_loop(overrides, options.steps, options.warmup))
        print(
            f"round {round_index + 1}: raw {raw[-1] * 1000:.1f} ms/step, Lightning {lightning[-1] * 1000:.1f} ms/step"
        )
    ratios = [b / a for a, b in zip(raw, lightning, strict=True)]
    print(
        json.dumps(
            {
                "raw_ms_per_step": [round(1000 * value, 2) for value in raw],
                "lightning_ms_per_step": [round(1000 * value, 2) for value in lightning],
                "lightning_over_raw": [round(value, 4) for value in ratios],
                "median_overhead_percent": round(100 * (statistics.median(ratios) - 1), 2),
                "overrides": overrides,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
