"""What the benchmarks here run on: the default translation task's data, tokenizer and model sizes, built as
`train.py` builds them, and HuggingFace BART and T5 models of the same dimensions."""

from __future__ import annotations

import atexit
import cProfile
import json
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from weaver.cli.train import train
from weaver.config import config_dir, register_resolvers
from weaver.data import Seq2SeqDataModule
from weaver.instantiate import build, build_tokenizer

# The model every benchmark trains unless told otherwise: weaver_small from scratch on the task's own 8,000-token BPE
# (the default run fine-tunes the shipped model, whose 16,000-token vocabulary would change every side's cost).
MODEL = ["model=weaver_small"]

# Quiet, comparable runs: no checkpoints, no validation, CSV logs only.
BENCHMARK_RUN = [
    "logger=csv",
    "test=false",
    "print_config=false",
    "+trainer.limit_val_batches=0",
    "trainer.max_time=null",
    "~callbacks.model_checkpoint",
    "~callbacks.last_checkpoint",
    "~callbacks.early_stopping",
    "~callbacks.model_summary",
]


def compose_config(overrides: list[str]) -> DictConfig:
    """`train.py`'s config with `overrides`, its run dir in a temporary folder."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.mkdtemp(prefix="weaver-benchmark-")
    atexit.register(shutil.rmtree, cfg.paths.output_dir, ignore_errors=True)
    return cfg


def datamodule(cfg: DictConfig) -> Seq2SeqDataModule:
    data = build(cfg.data, "data", tokenizer=build_tokenizer(cfg), cache_dir=cfg.paths.cache_dir)
    data.setup("fit")
    return data


def equal_size_bart(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> BartForConditionalGeneration:
    """BART with the Weaver model's width, depth, heads, feed-forward size, dropout and vocabulary."""
    m = cfg.model
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=m.d_model,
        encoder_layers=m.num_encoder_layers,
        decoder_layers=m.num_decoder_layers,
        encoder_attention_heads=m.num_heads,
        decoder_attention_heads=m.num_heads,
        encoder_ffn_dim=m.ffn_dim,
        decoder_ffn_dim=m.ffn_dim,
        dropout=m.dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_position_embeddings=m.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,  # as Weaver's decoder
        forced_eos_token_id=None,
    )
    return BartForConditionalGeneration(config)


def equal_size_t5(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> T5ForConditionalGeneration:
    """T5 with the Weaver model's width, depth, heads, feed-forward size, dropout and vocabulary."""
    m = cfg.model
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=m.d_model,
        d_kv=m.d_model // m.num_heads,
        d_ff=m.ffn_dim,
        num_layers=m.num_encoder_layers,
        num_decoder_layers=m.num_decoder_layers,
        num_heads=m.num_heads,
        dropout_rate=m.dropout,
        feed_forward_proj="gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
    )
    return T5ForConditionalGeneration(config)


def real_tokens(attention_mask: torch.Tensor, labels: torch.Tensor) -> int:
    """Non-pad source tokens plus target tokens (labels of -100 are padding)."""
    return int(attention_mask.sum()) + int(labels.ne(-100).sum())


class TokenClock(L.Callback):
    """Real tokens, wall seconds and process CPU seconds over the training steps after `warmup`
    (`+callbacks.token_clock=...`). CPU time is what a noisy shared machine disturbs least. With `profile`, the
    same steps run under cProfile (`profiler`)."""

    def __init__(self, warmup: int, profile: bool = False) -> None:
        self.warmup, self.tokens = warmup, 0
        self.start = self.cpu_start = self.seconds = self.cpu_seconds = 0.0
        self.profiler = cProfile.Profile() if profile else None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, _: int) -> None:
        if trainer.global_step == self.warmup:
            self.start, self.cpu_start = time.perf_counter(), time.process_time()
            if self.profiler is not None:
                self.profiler.enable()
        if trainer.global_step >= self.warmup:
            self.tokens += real_tokens(batch["attention_mask"], batch["labels"])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.profiler is not None:
            self.profiler.disable()
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start


# Where a profile's own time (cProfile's tottime) is spent, by the code it is spent in: the first group whose marker
# the function's file (or a built-in's name) holds.
PROFILE_GROUPS = {
    "torch C++ (kernels, autograd, optimizer)": ("torch._C", "torch._ops", "of 'torch.", "built-in method torch"),
    "Lightning": ("/lightning/", "/lightning_fabric/", "/lightning_utilities/"),
    "torchmetrics": ("/torchmetrics/",),
    "Rich (progress bar)": ("/rich/",),
    "Weaver (model, task, callbacks)": ("/weaver/",),
    "torch Python": ("/torch/",),
}


def profile_groups(profiler: cProfile.Profile, steps: int) -> dict[str, float]:
    """Milliseconds per step of own time in each of `PROFILE_GROUPS`, the rest as "other"."""
    grouped: dict[str, float] = dict.fromkeys([*PROFILE_GROUPS, "other"], 0.0)
    for (filename, _, name), (_, _, own, _, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        where = f"{filename} {name}"
        group = next((g for g, markers in PROFILE_GROUPS.items() if any(m in where for m in markers)), "other")
        grouped[group] += own
    return {group: round(1000 * seconds / steps, 2) for group, seconds in grouped.items()}


def round_order(systems: list[str], round_index: int) -> list[str]:
    """The order of `systems` in round `round_index`: rotated one place a round (A B, B A, ... for two; A B C,
    B C A, C A B, ... for three), so each system runs in each position equally often."""
    shift = round_index % len(systems)
    return systems[shift:] + systems[:shift]


def alternate(module: str, systems: list[str], rounds: int, arguments: list[str]) -> dict[str, list[dict]]:
    """Measure each system in a fresh process (`python -m module --system NAME arguments`, which prints one JSON
    line last), for `rounds` rounds in rotating order (`round_order`): no system inherits another's allocator or
    cache state, and neither the drift of a shared machine nor going first favours one of them."""
    results: dict[str, list[dict]] = {system: [] for system in systems}
    for round_index in range(rounds):
        for system in round_order(systems, round_index):
            command = [sys.executable, "-m", module, "--system", system, *arguments]
            finished = subprocess.run(command, capture_output=True, text=True, check=False)
            if finished.returncode:
                raise RuntimeError(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
            results[system].append(json.loads(finished.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1} {system}: {results[system][-1]}", file=sys.stderr, flush=True)
    return results


def ratio_summary(ratios: list[float], target: float | None = None, higher_is_better: bool = True) -> dict:
    """Each round's ratio, their median and min-max, and against `target` "met" only where the whole range clears
    it ("not shown" otherwise: a median past the target with a round short of it is not a result)."""
    summary: dict = {
        "per_round": [round(value, 4) for value in ratios],
        "median": round(statistics.median(ratios), 4),
        "min": round(min(ratios), 4),
        "max": round(max(ratios), 4),
    }
    if target is not None:
        cleared = min(ratios) >= target if higher_is_better else max(ratios) <= target
        summary["target"] = target
        summary["verdict"] = "met" if cleared else "not shown"
    return summary


def timed_train(overrides: list[str], steps: int, warmup: int, profile: bool = False) -> TokenClock:
    """Run `train(cfg)` for `warmup + steps` steps; the clock that timed (and with `profile`, profiled) the last
    `steps`."""
    clock = [f"+callbacks.token_clock._target_={TokenClock.__module__}.TokenClock"]
    clock += [f"+callbacks.token_clock.warmup={warmup}", f"+callbacks.token_clock.profile={profile}"]
    cfg = compose_config([*BENCHMARK_RUN, f"trainer.max_steps={warmup + steps}", *clock, *overrides])
    _, objects = train(cfg)
    (measured,) = (callback for callback in objects["trainer"].callbacks if isinstance(callback, TokenClock))
    return measured
