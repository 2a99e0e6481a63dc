"""Batch samplers whose batches depend only on (seed, epoch): fixed-size batches, and token-budget batches
(fairseq's `--max-tokens`) of similar lengths whose padded size fits a budget, `len(batch) * longest <= max_tokens`.

Sorting by length before cutting batches keeps padding low; shuffling the order of the batches (not their
contents) each epoch keeps training stochastic. Under data parallelism every replica takes distinct batches,
and all replicas take the same number of them.

Lightning notes (2.6):
- With `use_distributed_sampler=True` (the default) under a distributed strategy, Lightning sees the loader's
  automatic `SequentialSampler`, builds a `DistributedSampler` and re-instantiates a `BatchSampler` subclass
  created inside a `*_dataloader` hook from its captured arguments, with `sampler=` replaced. The sampler
  therefore subclasses `BatchSampler`, accepts `sampler`, and takes the replica count and rank of an injected
  `DistributedSampler`, ignoring its index order: no need to set `trainer.use_distributed_sampler=false`.
- Lightning calls `set_epoch` on `dataloader.sampler` and `dataloader.batch_sampler.sampler`, never on the
  batch sampler itself, so `sampler` here is the batch sampler: that is how `set_epoch` reaches it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pyarrow.compute as pc
import torch.distributed as dist
from datasets import Dataset
from torch.utils.data import BatchSampler, DistributedSampler, Sampler


def column_lengths(dataset: Dataset, column: str) -> np.ndarray:
    """Length of every list in `column`, read from Arrow list offsets (no Python pass over the rows)."""
    values = dataset.with_format("arrow")[column]
    return pc.fill_null(pc.list_value_length(values), 0).to_numpy().astype(np.int64)


def example_lengths(dataset: Dataset, columns: Sequence[str] = ("input_ids", "labels")) -> np.ndarray:
    """Per example, the longest of `columns`: the width the example forces onto its batch."""
    return np.maximum.reduce([column_lengths(dataset, column) for column in columns])


def padding_efficiency(batches: Sequence[Sequence[int]], lengths: np.ndarray) -> float:
    """Real tokens / padded tokens over `batches` of indices, each batch padded to its longest member."""
    sizes = np.fromiter((len(batch) for batch in batches), dtype=np.int64, count=len(batches))
    if not sizes.sum():
        return 1.0
    flat = np.fromiter(itertools.chain.from_iterable(batches), dtype=np.int64, count=int(sizes.sum()))
    members = np.asarray(lengths, dtype=np.int64)[flat]
    starts = np.cumsum(sizes) - sizes
    widest = np.maximum.reduceat(members, starts[sizes > 0])
    padded = int((widest * sizes[sizes > 0]).sum())
    return float(members.sum() / padded) if padded else 1.0


def replicas(num_replicas: int | None, rank: int | None, sampler: Sampler | None = None) -> tuple[int, int]:
    """(replica count, rank): explicit values, else an injected `DistributedSampler`'s, else those of
    torch.distributed when it is initialised, else (1, 0)."""
    if isinstance(sampler, DistributedSampler):
        pairs = (("num_replicas", num_replicas, sampler.num_replicas), ("rank", rank, sampler.rank))
        for name, given, injected in pairs:
            if given is not None and given != injected:
                raise ValueError(f"{name}={given}, but the injected DistributedSampler has {injected}.")
        num_replicas, rank = sampler.num_replicas, sampler.rank
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"Invalid rank {rank} for num_replicas={num_replicas}.")
    return num_replicas, rank


def cut_sorted(sorted_lengths: np.ndarray, max_tokens: int) -> np.ndarray:
    """Batch boundaries over ascending lengths, cut greedily: each batch takes as many examples as fit
    `count * longest <= max_tokens`, at least one (an example over budget forms a batch of its own)."""
    widths = np.maximum(sorted_lengths, 1)
    total = len(widths)
    bounds, start = [0], 0
    while start < total:
        # count * widths[start + count - 1] grows with count: binary search the largest count within budget.
        low, high = 1, total - start
        while low < high:
            middle = (low + high + 1) // 2
            if middle * int(widths[start + middle - 1]) <= max_tokens:
                low = middle
            else:
                high = middle - 1
        start += low
        bounds.append(start)
    return np.asarray(bounds, dtype=np.int64)


class EpochBatchSampler(BatchSampler):
    """Batches that depend only on (seed, epoch), so every rank and every restart agree on them.

    Subclasses form one epoch's batches (`all_batches`); this class splits them over replicas: replica `rank` takes
    every `num_replicas`-th batch from position `rank`. With `even` (training: every replica must take the same
    number of steps; evaluation of a sharded model, whose forwards every rank runs together) the epoch's list is
    first padded by repeating its first batches up to a multiple of `num_replicas`, as `DistributedSampler` does with
    examples; evaluation counts each example once, by its id. Without it (other evaluation) no example is seen twice
    and replicas may get one batch fewer (padding happens only if there are fewer batches than replicas). `resume`
    makes the next pass over an epoch start part-way (see `ResumableDataLoader`).

    `sampler` exists for Lightning, which passes a `DistributedSampler` here when it re-instantiates the
    batch sampler under a distributed strategy; only its `num_replicas` and `rank` are used.
    """

    total_batches: int  # batches per epoch over all replicas, before padding

    def __init__(
        self,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: Sampler | None = None,
        even: bool = True,
    ) -> None:
        # BatchSampler.__init__ is not called: it wants a sampler of indices and a fixed batch size.
        self.shuffle, self.seed, self.even = shuffle, int(seed), even
        self.num_replicas, self.rank = replicas(num_replicas, rank, sampler)
        self.epoch = 0
        self.skip = 0  # batches of `epoch` this replica already served before a restart

    @property
    def sampler(self) -> EpochBatchSampler:
        # Lightning calls `dataloader.batch_sampler.sampler.set_epoch(epoch)`: this routes it to `set_epoch`.
        return self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def resume(self, epoch: int, served: int) -> None:
        """The next pass yields `epoch`'s batches after the first `served` of this replica's."""
        self.epoch, self.skip = epoch, served

    def padded(self) -> bool:
        return self.even or self.total_batches < self.num_replicas

    def __len__(self) -> int:
        if self.padded():
            return math.ceil(self.total_batches / self.num_replicas)
        return len(range(self.rank, self.total_batches, self.num_replicas))

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        return iter(self.batches()[skip:])

    def all_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every replica's batches for `epoch` (default: the current one), in epoch order, before padding."""
        raise NotImplementedError

    def rng(self, epoch: int | None) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch if epoch is None else epoch])

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This replica's batches for `epoch` (default: the current one)."""
        every = self.all_batches(epoch)
        if not every or not self.padded():
            return every[self.rank :: self.num_replicas]
        padded = [every[i % len(every)] for i in range(len(self) * self.num_replicas)]
        return padded[self.rank :: self.num_replicas]

    def padding_efficiency(self, lengths: Mapping[str, np.ndarray], epoch: int | None = None) -> dict[str, float]:
        """Real / padded tokens of every replica's batches, per named length array (e.g. source, target)."""
        batches = self.all_batches(epoch)
        return {name: padding_efficiency(batches, values) for name, values in lengths.items()}


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


class FixedSizeBatchSampler(EpochBatchSampler):
    """`batch_size` examples a batch (the last one may be smaller), in a fresh random order each epoch when
    shuffling, else in dataset order."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: Sampler | None = None,
        even: bool = True,
    ) -> None:
        super().__init__(shuffle, seed, num_replicas, rank, sampler, even)
        self.size, self.batch_size = size, positive_int("batch_size", batch_size)
        self.total_batches = math.ceil(size / batch_size)

    def all_batches(self, epoch: int | None = None) -> list[list[int]]:
        order = self.rng(epoch).permutation(self.size) if self.shuffle else np.arange(self.size)
        return [order[start : start + self.batch_size].tolist() for start in range(0, self.size, self.batch_size)]


class TokenBudgetBatchSampler(EpochBatchSampler):
    """Length-bucketed batches of at most `max_tokens` padded tokens (`len(batch) * longest <= max_tokens`).

    Examples are sorted by length, then by `tie_lengths` when given (e.g. source + target: among examples of the
    same width the other side's padding shrinks too), remaining ties broken by a shuffle seeded with (seed, epoch)
    when shuffling, by index otherwise; then cut greedily. With `shuffle` the order of the batches is shuffled per
    (seed, epoch); without it batches come shortest first. Because the sorted sequence of lengths does not depend
    on how ties are broken, the batch boundaries, and so `len()`, are the same every epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        tie_lengths: Sequence[int] | np.ndarray | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        sampler: Sampler | None = None,
        even: bool = True,
    ) -> None:
        super().__init__(shuffle, seed, num_replicas, rank, sampler, even)
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.tie_lengths = np.zeros_like(self.lengths) if tie_lengths is None else np.asarray(tie_lengths).reshape(-1)
        if self.tie_lengths.shape != self.lengths.shape:
            raise ValueError(f"tie_lengths has {len(self.tie_lengths)} entries for {len(self.lengths)} examples.")
        self.max_tokens = positive_int("max_tokens", max_tokens)
        self.bounds = cut_sorted(np.sort(self.lengths, kind="stable"), max_tokens)
        self.total_batches = len(self.bounds) - 1
        self.oversized = int((self.lengths > max_tokens).sum())

    def all_batches(self, epoch: int | None = None) -> list[list[int]]:
        count = len(self.lengths)
        if self.shuffle:
            rng = self.rng(epoch)
            last_key = rng.permutation(count)
            batch_order = rng.permutation(self.total_batches)
        else:
            last_key = np.arange(count)
            batch_order = np.arange(self.total_batches)
        order = np.lexsort((last_key, self.tie_lengths, self.lengths))  # the last key sorts first
        return [order[self.bounds[b] : self.bounds[b + 1]].tolist() for b in batch_order]
