"""The benchmark protocol's helpers: round order and verdicts, the matmul peak, the vendor peak, HF's token clock fed
Weaver's batches, HF's length-grouped batches, and the profile's grouping."""

from __future__ import annotations

import cProfile
import functools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import BartConfig, BartForConditionalGeneration, Seq2SeqTrainingArguments

from experiments.benchmarks.mfu import vendor_peak
from experiments.benchmarks.padding_efficiency import group_by_length_batches
from experiments.benchmarks.train_throughput import GivenBatchesTrainer, HFTokenClock, matched_dropout
from experiments.benchmarks.workload import profile_groups, ratio_summary, round_order
from weaver.utils import hardware

pytestmark = pytest.mark.usefixtures("single_thread")


def test_rounds_rotate_so_each_system_runs_in_each_place_equally_often() -> None:
    orders = [round_order(["a", "b", "c"], index) for index in range(6)]
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for system in "abc":
        assert sorted(order.index(system) for order in orders) == [0, 0, 1, 1, 2, 2]
    assert [round_order(["raw", "lightning"], index)[0] for index in range(4)] == ["raw", "lightning"] * 2


def test_a_target_is_met_only_where_every_round_clears_it() -> None:
    assert ratio_summary([1.5, 1.4, 1.35], 1.3)["verdict"] == "met"
    summary = ratio_summary([1.9, 1.8, 1.29], 1.3)
    assert summary["median"] == 1.8 and summary["verdict"] == "not shown"
    assert ratio_summary([1.01, 1.02], 1.03, higher_is_better=False)["verdict"] == "met"
    assert ratio_summary([1.01, 1.04], 1.03, higher_is_better=False)["verdict"] == "not shown"


def test_the_measured_peak_is_the_best_window_of_three_timed_products(monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock: the deadline is read at 0.0 (one second on), then two windows of 0.5 s and 0.25 s, then past it.
    ticks = iter([0.0, 0.1, 0.6, 0.6, 0.85, 2.0])
    monkeypatch.setattr(hardware, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    size = 64  # small: the clock is fake, and emulated bf16 products are slow on CPUs without bf16 units
    monkeypatch.setattr(hardware, "product_size", lambda *_: size)  # sized without the clock
    assert hardware.measured_matmul_flops.__wrapped__(torch.bfloat16) == pytest.approx(3 * 2 * size**3 / 0.25)


def test_the_cpu_peak_is_measured_again_for_another_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    measured = []
    monkeypatch.setattr(
        hardware, "measured_matmul_flops", functools.cache(lambda dtype, device, threads: measured.append(threads))
    )
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        assert hardware.peak_flops(torch.device("cpu"), torch.float32)[1] == f"measured ({threads} threads)"
    assert measured == [1, 2]


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
cpu MHz\t\t: 2596.126

processor\t: 1
vendor_id\t: AuthenticAMD
"""


def test_the_vendor_peak_is_flop_per_cycle_times_cores_times_clock() -> None:
    peak = vendor_peak(CPUINFO, cores=2)
    assert peak["cpu"] == "AMD EPYC (Zen 5, family 26 model 2)"
    assert peak["tflops_at_reported_clock"] == pytest.approx(128 * 2 * 2.596126e9 / 1e12, abs=1e-3)
    assert peak["tflops_at_max_boost"] == pytest.approx(128 * 2 * 5.0e9 / 1e12)
    assert vendor_peak(CPUINFO.replace("AuthenticAMD", "GenuineIntel"), cores=2) is None


def tiny_bart(dropout: float = 0.0) -> BartForConditionalGeneration:
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=40,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        dropout=dropout,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
    )
    return BartForConditionalGeneration(config)


def test_the_hf_token_clock_counts_the_real_tokens_of_the_timed_steps_of_the_given_batches(tmp_path: Path) -> None:
    # Example i has a source of 3 + i tokens and a target of 2 + i % 3: its source length names it.
    rows = [{"input_ids": [5] * (3 + i), "labels": [6] * (2 + i % 3)} for i in range(8)]
    batches = [[0, 5], [1, 2, 3], [4], [6, 7]]
    seen: list[list[int]] = []

    def pad(features: list[dict]) -> dict[str, torch.Tensor]:
        seen.append([len(f["input_ids"]) - 3 for f in features])
        width = max(len(f["input_ids"]) for f in features)
        height = max(len(f["labels"]) for f in features)
        ids = torch.tensor([f["input_ids"] + [1] * (width - len(f["input_ids"])) for f in features])
        labels = torch.tensor([f["labels"] + [-100] * (height - len(f["labels"])) for f in features])
        return {"input_ids": ids, "attention_mask": ids.ne(1).long(), "labels": labels}

    clock = HFTokenClock(warmup=1)
    arguments = {"max_steps": 4, "use_cpu": True, "report_to": "none", "save_strategy": "no", "disable_tqdm": True}
    trainer = GivenBatchesTrainer(
        model=tiny_bart(),
        args=Seq2SeqTrainingArguments(output_dir=str(tmp_path), logging_steps=1000, **arguments),
        train_dataset=Dataset.from_list(rows),
        data_collator=lambda features: clock.count(pad(features)),
        callbacks=[clock],
        batches=batches,
    )
    trainer.train()
    assert seen[:4] == batches  # the given batches, in their order
    real = [sum(3 + i + 2 + i % 3 for i in batch) for batch in batches]
    assert clock.steps == 3 and clock.tokens == sum(real[1:])  # the steps after the warm-up one
    assert clock.seconds > 0


def test_t5s_extra_dropouts_are_switched_off_and_the_rest_kept() -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, dropout_rate=0.1)
    model = matched_dropout(T5ForConditionalGeneration(config))
    kinds = {type(module).__name__: module for module in model.modules()}
    assert kinds["T5DenseActDense"].dropout.p == 0.0 and kinds["T5Attention"].dropout == 0.0
    assert kinds["T5LayerFF"].dropout.p == 0.1 and model.encoder.dropout.p == 0.1  # residual and embedding dropout


def test_hf_length_grouped_batches_hold_every_example_once_and_pad_less_than_random_ones() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 200, 1000)
    batches = group_by_length_batches(lengths, batch_size=16, seed=0)
    assert sorted(index for batch in batches for index in batch) == list(range(1000))
    assert all(len(batch) == 16 for batch in batches[:-1])

    def padded(groups: list[list[int]]) -> int:
        return sum(len(group) * int(lengths[group].max()) for group in groups)

    shuffled = rng.permutation(1000)
    random_batches = [shuffled[start : start + 16].tolist() for start in range(0, 1000, 16)]
    assert padded(batches) < 0.7 * padded(random_batches)
    assert batches == group_by_length_batches(lengths, batch_size=16, seed=0)  # seeded


def test_a_profile_attributes_own_time_to_the_code_it_is_spent_in() -> None:
    weights = torch.randn(64, 64, requires_grad=True)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(4):
        torch.matmul(weights, weights).sum().backward()
    profiler.disable()
    groups = profile_groups(profiler, steps=4)
    assert set(groups) >= {"torch C++ (kernels, autograd, optimizer)", "Lightning", "other"}
    assert groups["torch C++ (kernels, autograd, optimizer)"] > 0 and groups["Lightning"] == 0
