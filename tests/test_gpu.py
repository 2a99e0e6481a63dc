"""GPU runs of the hardware configs (skipped without a CUDA device), and what of them a CPU machine can check."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import FSDPStrategy
from torch.profiler import ProfilerActivity, profile

from tests.conftest import compose_config
from tests.helpers import run_cli
from weaver.instantiate import build
from weaver.models.kernels import attention
from weaver.models.weaver import DecoderLayer, EncoderLayer
from weaver.utils.hardware import peak_flops

TINY_GPU = ["debug=fast", "model=weaver_tiny", "tokenizer.vocab_size=400"]


def test_fsdp_config_wraps_each_transformer_layer() -> None:
    strategy = build(compose_config(["hardware=fsdp"]).trainer.strategy, "trainer.strategy")
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {EncoderLayer, DecoderLayer}


def trained_metrics(tmp_path: Path, *overrides: str) -> dict[str, float]:
    result = run_cli(*TINY_GPU, *overrides, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "translation").glob("*/*")
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@pytest.mark.gpu
@pytest.mark.slow
def test_bf16_training_on_one_gpu_logs_mfu(tiny_data_dir: Path, tmp_path: Path) -> None:
    metrics = trained_metrics(tmp_path, "hardware=gpu", f"data.data_dir={tiny_data_dir}")
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    assert metrics["perf/tokens_per_sec"] > 0 and 0 < metrics["perf/mfu"] < 1


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_ddp_on_two_gpus(tiny_data_dir: Path, tmp_path: Path) -> None:
    metrics = trained_metrics(tmp_path, "hardware=ddp", "trainer.devices=2", f"data.data_dir={tiny_data_dir}")
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))


@pytest.mark.gpu
@pytest.mark.slow
def test_fsdp_trains_and_checkpoints(tiny_data_dir: Path, tmp_path: Path) -> None:
    metrics = trained_metrics(tmp_path, "hardware=fsdp", "trainer.devices=1", f"data.data_dir={tiny_data_dir}")
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs `pip install deepspeed`")
def test_deepspeed_stage_2_trains(tiny_data_dir: Path, tmp_path: Path) -> None:
    metrics = trained_metrics(tmp_path, "hardware=deepspeed", "trainer.devices=1", f"data.data_dir={tiny_data_dir}")
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))


@pytest.mark.gpu
def test_peak_flops_of_any_gpu_is_documented_or_measured() -> None:
    peak, source = peak_flops(torch.device("cuda"), torch.bfloat16)
    assert peak > 1e12 and source.split()[0] in {"documented", "measured"}


@pytest.mark.gpu
def test_masked_training_attention_on_gpu_keeps_off_cudnn_and_equals_math() -> None:
    generator = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(4, 8, 64, 64, device="cuda", dtype=torch.bfloat16, generator=generator) for _ in range(3))
    mask = torch.arange(64, device="cuda") < torch.tensor([64, 40, 17, 1], device="cuda")[:, None]
    mask = mask[:, None, None, :]
    q.requires_grad_()
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        (grad,) = torch.autograd.grad(attention(q, k, v, mask).float().square().sum(), q)
    assert not [event.name for event in trace.events() if "cudnn" in event.name.lower()]
    reference = q.detach().float().requires_grad_()
    expected = F.scaled_dot_product_attention(reference, k.float(), v.float(), attn_mask=mask)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), reference)
    torch.testing.assert_close(grad.float(), expected_grad, atol=0.1, rtol=0.05)
