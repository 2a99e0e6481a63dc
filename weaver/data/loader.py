"""A training DataLoader whose position inside an epoch survives a checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from weaver.data.batching import EpochBatchSampler


class ResumableDataLoader(DataLoader):
    """A DataLoader over an `EpochBatchSampler` that Lightning checkpoints mid-epoch.

    Lightning saves the `state_dict` of a training loader that has one in every checkpoint and hands it back to
    `load_state_dict` on resume: here, how many batches of which epoch were served. Since the batches depend only
    on (seed, epoch), the resumed pass starts right after them and the run sees exactly the batches an
    uninterrupted run would. Batches are counted as they leave the loader (Lightning fetches no further ahead for
    loaders of known length), not as the sampler hands indices to workers.
    """

    batch_sampler: EpochBatchSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, EpochBatchSampler):
            raise TypeError("ResumableDataLoader needs an EpochBatchSampler as batch_sampler.")
        self.served = 0

    def __iter__(self) -> Iterator[Any]:
        # A generator: the sampler is read at the first batch, after Lightning's set_epoch for this epoch.
        self.served = self.batch_sampler.skip
        for batch in super().__iter__():
            self.served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.epoch, "batches_served": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(state["epoch"], state["batches_served"])
