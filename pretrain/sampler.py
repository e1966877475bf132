"""A distributed sampler that can start mid-epoch, for exact resumption."""
import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle (and of its DataLoader's generator). 1_000_003 is a
    prime above any epoch count, so distinct (seed, epoch) pairs never share a seed, as
    ``seed + epoch`` would (seed 1, epoch 0 = seed 0, epoch 1)."""
    return seed * 1_000_003 + epoch


class ResumableDistributedSampler(Sampler[int]):
    """Shuffles with a (seed, epoch) permutation, shards it over ranks, drops the tail so every
    rank yields the same number of full batches, and can skip the batches already trained.

    Yields ``epoch * dataset_size + image_index``: ``MultiCropDataset`` decodes the epoch from it,
    so a sample's augmentation depends on (seed, epoch, index) only, whatever the worker count.
    """

    def __init__(self, dataset_size: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True):
        if dataset_size < batch_size * world_size:
            raise ValueError(f"the dataset has {dataset_size} images, fewer than one global "
                             f"batch ({batch_size} x {world_size} processes)")
        self.dataset_size, self.batch_size = dataset_size, batch_size
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset_size // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.dataset_size, generator=g)
        else:
            order = torch.arange(self.dataset_size)
        used = self.batches_per_epoch * self.batch_size * self.world_size
        mine = order[:used][self.rank::self.world_size]
        offset = self.epoch * self.dataset_size
        for i in mine[self.start_batch * self.batch_size:].tolist():
            yield offset + i
