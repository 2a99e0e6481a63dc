"""Fitting runs to the hardware: the default precision, and the FLOP/s MFU is measured against."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_config
from weaver.utils import hardware


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "precision"),
    [(True, False, "bf16-mixed"), (False, True, "bf16-mixed"), (False, False, "32-true")],
)
def test_cpus_autocast_to_bf16_only_where_they_multiply_it_natively(
    avx512_bf16: bool, amx: bool, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    for hardware_option in ("auto", "cpu"):
        assert compose_config([f"hardware={hardware_option}"]).trainer.precision == precision
    assert compose_config(["hardware=cpu", "trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"
    assert compose_config(["hardware=gpu"]).trainer.precision == "bf16-mixed"


def test_gpus_autocast_to_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert hardware.default_precision("auto") == "bf16-mixed"
    assert hardware.default_precision("cpu") == "32-true"


def test_a_slow_dtype_is_measured_on_smaller_products(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(0)
    ticks = iter([0.0, 1.0])  # one 256 x 256 product taking a second: ~34 MFLOP/s
    monkeypatch.setattr(hardware.time, "perf_counter", lambda: next(ticks))
    assert hardware.product_size(torch.float32, generator, seconds=1.0) == 256
    ticks = iter([0.0, 1e-6])  # ~34 TFLOP/s: the largest
    assert hardware.product_size(torch.float32, generator, seconds=1.0) == 2048
    ticks = iter([0.0, 3.4e-3])  # ~10 GFLOP/s: products of ~0.1 s
    assert hardware.product_size(torch.float32, generator, seconds=1.0) == 790  # (0.1 s x rate / 2) ** (1 / 3)
