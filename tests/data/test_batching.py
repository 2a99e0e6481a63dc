"""Batch samplers (token-budget and fixed-size): the budget, epochs, replicas, Lightning's sampler handling, resuming
mid-epoch, and the data module."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _is_dataloader_shuffled, _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from tests.conftest import embedded_rows, write_jsonl
from weaver.data import Seq2SeqDataModule, TrainedTokenizer
from weaver.data.batching import (
    EpochBatchSampler,
    FixedSizeBatchSampler,
    TokenBudgetBatchSampler,
    example_lengths,
    padding_efficiency,
)
from weaver.data.loader import ResumableDataLoader
from weaver.errors import ConfigError


@pytest.fixture(scope="module")
def corpus_lengths() -> dict[str, np.ndarray]:
    """Word counts of the embedded corpus' training pairs, capped like max_length=128 truncation."""
    rows = embedded_rows("ddtp_en_de", "train", 10**6)
    return {side: np.minimum([len(row[side].split()) for row in rows], 128) for side in ("en", "de")}


def random_lengths(count: int = 500, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 60, count)


def flat(batches: list[list[int]]) -> list[int]:
    return [index for batch in batches for index in batch]


def token_budget(lengths: np.ndarray, **kwargs) -> EpochBatchSampler:
    return TokenBudgetBatchSampler(lengths, 300, **kwargs)


def fixed_size(lengths: np.ndarray, **kwargs) -> EpochBatchSampler:
    return FixedSizeBatchSampler(len(lengths), 16, **kwargs)


SAMPLERS = pytest.mark.parametrize("make_sampler", [token_budget, fixed_size], ids=["token_budget", "fixed_size"])


@pytest.mark.parametrize("max_tokens", [59, 100, 256, 1000])
def test_every_batch_fits_the_budget(max_tokens: int) -> None:
    lengths = random_lengths()
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=max_tokens, seed=1)
    for batch in sampler:
        assert len(batch) * lengths[batch].max() <= max_tokens


def test_an_example_over_the_budget_forms_a_batch_of_its_own() -> None:
    lengths = np.array([5, 5, 5, 70, 5, 90])
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=20, shuffle=False)
    batches = list(sampler)
    assert sampler.oversized == 2
    assert [3] in batches and [5] in batches
    assert sorted(flat(batches)) == list(range(6))


@SAMPLERS
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_example_appears_once_per_epoch(shuffle: bool, make_sampler) -> None:
    lengths = random_lengths()
    sampler = make_sampler(lengths, shuffle=shuffle, seed=7)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(flat(list(sampler))) == list(range(len(lengths)))


@SAMPLERS
def test_shuffle_is_deterministic_per_seed_and_epoch(make_sampler) -> None:
    lengths = random_lengths()

    def epoch_batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = make_sampler(lengths, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_batches(1, 0) == epoch_batches(1, 0)
    assert epoch_batches(1, 0) != epoch_batches(1, 1)
    assert epoch_batches(1, 0) != epoch_batches(2, 0)
    # Batch contents change too (ties are re-broken per epoch), not only their order.
    first, second = ({tuple(sorted(b)) for b in epoch_batches(1, epoch)} for epoch in (0, 1))
    assert first != second


@SAMPLERS
@pytest.mark.parametrize("count", [500, 37, 3])
def test_replicas_get_disjoint_batches_covering_everything_in_equal_numbers(count: int, make_sampler) -> None:
    lengths = random_lengths(count)
    samplers = [make_sampler(lengths, seed=5, num_replicas=2, rank=rank) for rank in (0, 1)]
    single = make_sampler(lengths, seed=5)
    for epoch in (0, 1):
        for sampler in samplers + [single]:
            sampler.set_epoch(epoch)
        parts = [list(sampler) for sampler in samplers]
        assert len(parts[0]) == len(parts[1]) == len(samplers[0]) == len(samplers[1])
        assert sorted(set(flat(parts[0] + parts[1]))) == list(range(count))
        if single.total_batches % 2 == 0:  # no padding needed: an exact partition of the epoch's batches
            assert not set(flat(parts[0])) & set(flat(parts[1]))
            assert sorted(flat(parts[0] + parts[1])) == list(range(count))
        else:  # one batch repeated, as DistributedSampler repeats examples
            repeated = Counter(map(tuple, parts[0] + parts[1]))
            assert sum(repeated.values()) - len(repeated) == 1


@SAMPLERS
@pytest.mark.parametrize("count", [500, 37])
def test_uneven_replicas_split_the_batches_without_repeating_any(count: int, make_sampler) -> None:
    lengths = random_lengths(count)
    samplers = [make_sampler(lengths, shuffle=False, num_replicas=3, rank=rank, even=False) for rank in range(3)]
    parts = [list(sampler) for sampler in samplers]
    assert [len(part) for part in parts] == [len(sampler) for sampler in samplers]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert sorted(flat(sum(parts, []))) == list(range(count))  # every example exactly once


def test_evaluation_batches_come_in_length_order_every_epoch() -> None:
    lengths = random_lengths()
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=300, shuffle=False, seed=3)
    first = list(sampler)
    sampler.set_epoch(4)
    assert list(sampler) == first
    ordered = [int(lengths[i]) for i in flat(first)]
    assert ordered == sorted(ordered)


@SAMPLERS
@pytest.mark.parametrize("replicas", [1, 2, 3, 8])
def test_len_is_exact(replicas: int, make_sampler) -> None:
    lengths = random_lengths(211)
    for rank in range(replicas):
        sampler = make_sampler(lengths, seed=2, num_replicas=replicas, rank=rank)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            assert len(list(sampler)) == len(sampler) == -(-sampler.total_batches // replicas)


@pytest.mark.parametrize("max_tokens", [0, -5, 1.5, "100", True, None])
def test_invalid_budgets_are_rejected(max_tokens: object) -> None:
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        TokenBudgetBatchSampler([1, 2, 3], max_tokens=max_tokens)  # type: ignore[arg-type]


def test_token_budget_pads_far_less_than_fixed_size_random_batches(corpus_lengths: dict) -> None:
    en, de = corpus_lengths["en"], corpus_lengths["de"]
    fixed = FixedSizeBatchSampler(len(en), 64, seed=0).all_batches()
    budget = TokenBudgetBatchSampler(np.maximum(en, de), max_tokens=64 * 40, seed=0)
    by_budget = budget.padding_efficiency({"en": en, "de": de})
    for side, lengths in corpus_lengths.items():
        assert by_budget[side] > 0.85
        assert by_budget[side] > padding_efficiency(fixed, lengths) + 0.3
    assert padding_efficiency([[0, 1], [2]], np.array([2, 4, 3])) == pytest.approx(9 / 11)


def test_ties_in_width_are_ordered_by_the_other_side() -> None:
    # Dialogue-like: most sources cut at the same width, responses of any length.
    rng = np.random.default_rng(0)
    source = np.full(2000, 128)
    target = rng.integers(2, 64, size=2000)
    plain = TokenBudgetBatchSampler(np.maximum(source, target), max_tokens=2048, seed=1)
    tied = TokenBudgetBatchSampler(np.maximum(source, target), max_tokens=2048, tie_lengths=source + target, seed=1)
    assert [len(b) for b in sorted(plain.all_batches())] == [len(b) for b in sorted(tied.all_batches())]
    assert tied.padding_efficiency({"target": target})["target"] > 0.9
    assert plain.padding_efficiency({"target": target})["target"] < 0.6
    # Examples equal on both keys still mix differently each epoch.
    assert sorted(map(sorted, tied.all_batches(epoch=0))) != sorted(map(sorted, tied.all_batches(epoch=3)))


def test_example_lengths_come_from_the_arrow_columns() -> None:
    from datasets import Dataset

    data = Dataset.from_dict({"input_ids": [[1, 2], [1], [1, 2, 3]], "labels": [[1], [1, 2, 3, 4], [1]]})
    assert example_lengths(data).tolist() == [2, 4, 3]
    assert example_lengths(data.select([2, 0])).tolist() == [3, 2]


# ---- Lightning ---------------------------------------------------------------------------------------------


@SAMPLERS
@pytest.mark.parametrize("loader_class", [DataLoader, ResumableDataLoader])
def test_lightning_reinstantiates_the_sampler_with_its_distributed_sampler(make_sampler, loader_class) -> None:
    """What Lightning does under DDP with use_distributed_sampler=True: capture the batch sampler's arguments
    in the *_dataloader hook, then rebuild it with sampler=DistributedSampler(...)."""
    lengths, data = random_lengths(), list(range(500))
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        sampler = make_sampler(lengths, seed=3)
        loader = loader_class(data, batch_sampler=sampler, collate_fn=list)
    assert not _is_dataloader_shuffled(loader)  # so no "val dataloader shuffles" warning for eval loaders
    injected = DistributedSampler(data, num_replicas=2, rank=1, shuffle=True)
    rebuilt = _update_dataloader(loader, injected, mode=RunningStage.TRAINING)
    sampler = rebuilt.batch_sampler
    assert type(rebuilt) is loader_class and type(sampler) is type(loader.batch_sampler)
    assert (sampler.num_replicas, sampler.rank) == (2, 1)
    _set_sampler_epoch(rebuilt, 4)  # Lightning's per-epoch call reaches the batch sampler
    assert sampler.epoch == 4
    reference = make_sampler(lengths, seed=3, num_replicas=2, rank=1)
    reference.set_epoch(4)
    assert list(rebuilt) == list(reference) and len(rebuilt) == len(reference)


def test_an_injected_sampler_that_disagrees_is_an_error() -> None:
    with pytest.raises(ValueError, match="rank=0, but the injected DistributedSampler has 1"):
        TokenBudgetBatchSampler(
            [1, 2], 10, num_replicas=2, rank=0, sampler=DistributedSampler(range(2), num_replicas=2, rank=1)
        )


# ---- the data module ---------------------------------------------------------------------------------------


def datamodule(tmp_path: Path, rows: list[dict], **kwargs) -> Seq2SeqDataModule:
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    options = {"source_field": "en", "target_field": "de", "cache_dir": str(tmp_path / "cache")}
    options.update(train_file=str(train), **kwargs)
    return Seq2SeqDataModule(TrainedTokenizer(vocab_size=400, min_frequency=1), **options)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return embedded_rows("ddtp_en_de", "train", 300)


@pytest.mark.parametrize("key", ["max_tokens", "eval_max_tokens"])
@pytest.mark.parametrize("value", [0, -1, 2.5, "many", True])
def test_invalid_max_tokens_names_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"data.{key} must be a positive integer"):
        Seq2SeqDataModule(TrainedTokenizer(), source_field="en", target_field="de", **{key: value})


def test_datamodule_batches_by_token_budget(tmp_path: Path, rows: list[dict], caplog: pytest.LogCaptureFixture) -> None:
    lengths = {"max_source_length": 64, "max_target_length": 64}
    dm = datamodule(tmp_path, rows, **lengths, max_tokens=400, eval_max_tokens=700)
    with caplog.at_level(logging.INFO, logger="weaver.data.datamodule"):
        dm.setup("fit")
    assert any("Train batches" in message and "max_tokens=400" in message for message in caplog.messages)

    loader = dm.train_dataloader()
    assert isinstance(loader.batch_sampler, TokenBudgetBatchSampler)
    seen = []
    for batch in loader:
        assert batch["input_ids"].numel() <= 400 and batch["labels"].numel() <= 400
        seen += batch["example_id"].tolist()
    assert len(seen) == len(set(seen)) == len(dm.datasets["train"])
    assert len(loader) == len(dm.batches("train"))

    widest = np.maximum(*dm.lengths("validation").values())
    val_ids = []
    for batch in dm.val_dataloader():
        assert batch["input_ids"].numel() <= 700
        val_ids += batch["example_id"].tolist()
    positions = {example_id: i for i, example_id in enumerate(dm.datasets["validation"]["example_id"])}
    widths = [int(widest[positions[i]]) for i in val_ids]
    assert widths == sorted(widths) and sorted(val_ids) == sorted(positions)

    budget = dm.padding_efficiency("train")
    fixed = datamodule(tmp_path, rows, **lengths, batch_size=16)
    fixed.setup("fit")
    assert fixed.padding_efficiency("train")["source"] < budget["source"] <= 1.0
    expected = -(-len(fixed.datasets["train"]) // 16)
    assert len(fixed.train_dataloader()) == len(fixed.batches("train")) == expected


class BatchRecorder(LightningModule):
    """Trains nothing: records the example ids of every training batch, per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[list[int]]] = {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.setdefault(self.current_epoch, []).append(batch["example_id"].tolist())
        return (self.weight * batch["input_ids"].size(0)).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_trainer_sets_the_epoch_of_the_token_budget_sampler(tmp_path: Path, rows: list[dict]) -> None:
    dm = datamodule(tmp_path, rows[:120], max_source_length=32, max_target_length=32, max_tokens=300)
    model = BatchRecorder()
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, datamodule=dm)
    steps = len(dm.batches("train"))
    assert [len(model.seen[epoch]) for epoch in (0, 1)] == [steps, steps]
    assert model.seen[0] != model.seen[1]
    for epoch in (0, 1):
        assert sorted(flat(model.seen[epoch])) == sorted(dm.datasets["train"]["example_id"])


def fit_recorder(dm: Seq2SeqDataModule, folder: Path, max_steps: int, **fit: object) -> BatchRecorder:
    """BatchRecorder trained for `max_steps`, saving a checkpoint after every step into `folder`."""
    model = BatchRecorder()
    every_step = ModelCheckpoint(dirpath=folder, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        callbacks=[every_step],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
    )
    trainer.fit(model, datamodule=dm, weights_only=False, **fit)
    return model


def batches_in_order(model: BatchRecorder) -> list[list[int]]:
    return [batch for epoch in sorted(model.seen) for batch in model.seen[epoch]]


@pytest.mark.parametrize("max_tokens", [300, None], ids=["token_budget", "fixed_size"])
def test_a_run_resumed_mid_epoch_sees_exactly_the_batches_of_an_uninterrupted_one(
    tmp_path: Path, rows: list[dict], max_tokens: int | None
) -> None:
    options = {"max_source_length": 32, "max_target_length": 32, "max_tokens": max_tokens, "batch_size": 16}
    dm = datamodule(tmp_path, rows[:120], **options)
    per_epoch = len(dm.batches("train"))
    total = 2 * per_epoch + 2  # into a third epoch
    uninterrupted = batches_in_order(fit_recorder(dm, tmp_path / "full", total))
    assert len(uninterrupted) == total
    # Mid first epoch, at its very end, and mid second epoch.
    for stop in (per_epoch // 2, per_epoch, per_epoch + per_epoch // 2):
        fresh = datamodule(tmp_path, rows[:120], **options)
        checkpoint = str(tmp_path / "full" / f"step={stop}.ckpt")
        resumed = fit_recorder(fresh, tmp_path / f"resumed{stop}", total, ckpt_path=checkpoint)
        assert batches_in_order(resumed) == uninterrupted[stop:], f"resumed after step {stop}"
