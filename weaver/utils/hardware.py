"""Fitting the run to the hardware: the peak rate MFU is measured against, CPU cores per process, FSDP units."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import hydra
import torch
from lightning.fabric.connector import _convert_precision_to_unified_args  # what Trainer(precision=) takes
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.strategies import FSDPStrategy

from weaver.errors import ConfigError

PRECISION_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


def default_precision(accelerator: str = "auto") -> str:
    """`${weaver.default_precision:cpu}`: bf16 autocast where matrix products run natively in bf16 (GPUs; CPUs
    with AVX-512 BF16 or AMX, about 2 and 5 times fp32), fp32 elsewhere: a CPU without those instructions converts
    every bf16 product, tens of times slower than fp32 (AVX2 alone: ~60x at 512 x 512)."""
    if accelerator != "cpu" and torch.cuda.is_available():
        return "bf16-mixed"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16-mixed" if native else "32-true"


def compute_dtype(precision: str | int) -> torch.dtype:
    """The dtype matrix products run in under a Lightning precision setting ("bf16-mixed" -> bfloat16); a value
    Lightning does not take is refused as its trainer would refuse it (tools that build none: predict.py)."""
    try:
        precision = _convert_precision_to_unified_args(precision)
    except ValueError as error:
        raise ConfigError(f"trainer.precision: {error}") from None
    return PRECISION_DTYPES.get(str(precision).split("-")[0], torch.float32)


@functools.cache
def measured_matmul_flops(
    dtype: torch.dtype, device: torch.device | None = None, seconds: float = 1.0, threads: int | None = None
) -> float:
    """FLOP/s of dense square matrix products in `dtype` on `device` (on a CPU with the threads torch uses now,
    which `threads` names so that the cached figure is theirs): the best this machine does on a matrix product,
    measured rather than read off a data sheet. The best of several short windows, since whatever else runs at that
    moment (a logger starting up) can only slow one down."""
    device = device or torch.device("cpu")
    # Drawn from their own generator: the first run in a process measures, so drawing from the global one would
    # give that run other dropout masks than the same run later in the process (in-process sweep trials).
    generator = torch.Generator(device).manual_seed(0)
    size = product_size(dtype, generator, seconds) if device.type == "cpu" else 8192
    a, b = (torch.randn(size, size, dtype=dtype, device=device, generator=generator) for _ in range(2))
    for _ in range(2):
        a @ b  # warm-up: thread pool, caches, kernel selection
    best, end = 0.0, time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        for _ in range(3):
            product = a @ b
        product[0, 0].item()  # waits for an accelerator's queued products
        best = max(best, 3 * 2 * size**3 / (time.perf_counter() - start))
    return best


def product_size(dtype: torch.dtype, generator: torch.Generator, seconds: float, largest: int = 2048) -> int:
    """The side of the square products a CPU is measured on: `largest`, or smaller where one product would take
    over a tenth of the `seconds` (emulated bf16), judged from one 256 x 256 product."""
    a, b = (torch.randn(256, 256, dtype=dtype, generator=generator) for _ in range(2))
    a @ b
    start = time.perf_counter()
    a @ b
    rate = 2 * 256**3 / max(time.perf_counter() - start, 1e-9)
    return min(largest, max(256, int((seconds / 10 * rate / 2) ** (1 / 3))))


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """Peak FLOP/s of one device and where the figure comes from: the documented dense peak for GPUs Lightning
    knows (H100 bf16: 989 TFLOP/s); a matrix-product measurement for CPUs and for GPUs it does not (H200)."""
    documented = get_available_flops(device, dtype) if device.type != "cpu" else None
    if documented:
        return float(documented), "documented"
    if device.type == "cpu":  # a sweep's jobs may run with other thread counts (a DDP job's share of the cores)
        threads = torch.get_num_threads()
        return measured_matmul_flops(dtype, device, threads=threads), f"measured ({threads} threads)"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return measured_matmul_flops(dtype, device), f"measured ({where})"


def share_cpu_cores(accelerator: str, processes_per_node: int) -> None:
    """Data parallelism on the CPU: each of a node's processes takes its share of the cores, instead of torch
    giving every process all of them (oversubscribed, several times slower). OMP_NUM_THREADS, when set, wins."""
    if accelerator != "cpu" or processes_per_node <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // processes_per_node))


def check_devices(accelerator: str, devices: Any) -> None:
    """`trainer.devices` beyond what this machine has would start that many processes (which then wait for each
    other forever on the CPU); refuse it before any starts. `-1`, `"auto"` and lists of GPU ids are Lightning's."""
    if isinstance(devices, bool) or not isinstance(devices, (int, str)) or not str(devices).isdigit():
        return
    requested = int(devices)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    available = torch.cuda.device_count() if on_gpu else len(os.sched_getaffinity(0))
    kind = "visible GPUs" if on_gpu else "CPU cores available to this process"
    if on_gpu and available == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator} asks for GPUs, but this machine has none visible: train on the CPU "
            "with hardware=cpu (or hardware=auto)."
        )
    if requested > available:
        raise ConfigError(
            f"trainer.devices={requested}, but this machine has {available} {kind}: set trainer.devices to at most "
            f"{available}."
        )


def fsdp_strategy(layers: list[str], **kwargs: Any) -> FSDPStrategy:
    """Lightning's FSDP strategy with one FSDP unit, and optionally one activation checkpoint, per layer class
    named in `layers` (dotted import paths: Hydra cannot pass classes)."""
    classes = {hydra.utils.get_class(path) for path in layers}
    if kwargs.pop("activation_checkpointing", False):
        kwargs["activation_checkpointing_policy"] = classes
    return FSDPStrategy(auto_wrap_policy=classes, **kwargs)
