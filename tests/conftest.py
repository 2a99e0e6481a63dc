"""Shared fixtures: small real data carved from the embedded corpus, and a shrunken training config."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from weaver.config import config_dir, register_resolvers, resource_path

# Small enough for a CPU test, large enough for a tokenizer and a few batches.
FIXTURE_SIZES = {"train": 240, "validation": 24, "test": 24}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def embedded_rows(corpus: str, split: str, count: int) -> list[dict]:
    with gzip.open(Path(resource_path(corpus)) / f"{split}.jsonl.gz", "rt", encoding="utf-8") as file:
        return [json.loads(line) for line in itertools.islice(file, count)]


def embedded_slice(folder: Path, corpus: str, sizes: dict[str, int]) -> Path:
    """train/validation/test JSONL files in `folder` holding the first rows of each split of `corpus`."""
    for split, count in sizes.items():
        write_jsonl(folder / f"{split}.jsonl", embedded_rows(corpus, split, count))
    return folder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return embedded_slice(tmp_path_factory.mktemp("ddtp_tiny"), "ddtp_en_de", FIXTURE_SIZES)


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=overrides or [], return_hydra_config=False)


# Shrink any task's config to seconds: tiny model and vocabulary, a few steps, CSV logs, CPU fp32.
TINY_MODEL = ["model=weaver_tiny", "tokenizer.vocab_size=400"]
TINY_RUN = [
    "logger=csv",
    "hardware=cpu",
    "trainer.precision=32-true",
    "trainer.log_every_n_steps=1",
    "generation.max_new_tokens=8",
    "generation.min_new_tokens=0",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "print_config=false",
]
# A few steps of fixed-size batches with a validation in the middle.
SHORT_TRAINING = [
    "data.max_tokens=null",
    "data.eval_max_tokens=null",
    "data.batch_size=16",
    "data.eval_batch_size=16",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "scheduler.num_warmup_steps=2",
    "task.max_generate_examples=16",
]


def tiny_run_config(overrides: list[str], tmp_path: Path, model: list[str] = TINY_MODEL) -> DictConfig:
    """`compose_config(model + TINY_RUN + overrides)` writing its run dir and caches under `tmp_path`."""
    cfg = compose_config(model + TINY_RUN + overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
    return cfg


@pytest.fixture
def train_config(tiny_data_dir: Path, tmp_path: Path) -> DictConfig:
    """The default (translation) config shrunk to seconds."""
    return tiny_run_config([f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING], tmp_path)


@pytest.fixture(scope="session")
def translation_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    """The best checkpoint of a tiny translation run, trained once for every test that reads one."""
    from tests.helpers import best_checkpoint
    from weaver.cli.train import train

    cfg = tiny_run_config([f"data.data_dir={tiny_data_dir}", *SHORT_TRAINING], tmp_path_factory.mktemp("trained"))
    train(cfg)
    return best_checkpoint(cfg)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n N`) each worker, and every process its tests start, gets its share of the cores:
    N processes each running all of them oversubscribe the CPU and run several times slower."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, len(os.sched_getaffinity(0)) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` are skipped, with the reason shown, on machines without a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def single_thread():
    """For modules of tiny-tensor tests (`pytestmark = pytest.mark.usefixtures("single_thread")`): tiny tensors
    gain nothing from threads, and OpenMP threads crawl when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
