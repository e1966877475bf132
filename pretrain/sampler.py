"""A distributed sampler that can start mid-epoch, for exact resumption, and the epoch
arithmetic the engine runs on (``epoch_steps``)."""
import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle (and of its DataLoader's generator). 1_000_003 is a
    prime above any epoch count, so distinct (seed, epoch) pairs never share a seed, as
    ``seed + epoch`` would (seed 1, epoch 0 = seed 0, epoch 1)."""
    return seed * 1_000_003 + epoch


def samples_per_rank(dataset_size: int, world_size: int) -> int:
    """Images each process sees per epoch, as the official ``DistributedSampler`` (no
    ``drop_last``): the shuffled list padded to a multiple of the processes, ceil(N / W)."""
    return -(-dataset_size // world_size)


def epoch_steps(dataset_size: int, batch_size: int, world_size: int = 1,
                drop_last: bool = False) -> int:
    """Steps per epoch for ``batch_size`` images per process. Official (the DataLoader keeps
    the last partial batch): ceil(ceil(N / W) / b); ImageNet-1k, 8 x 64: 2,503, the last of
    18 images per process. ``drop_last`` (our option, a deviation): full global batches only,
    N // (b W)."""
    if drop_last:
        return dataset_size // (batch_size * world_size)
    return -(-samples_per_rank(dataset_size, world_size) // batch_size)


class ResumableDistributedSampler(Sampler[int]):
    """Shuffles with a (seed, epoch) permutation, shards it over ranks, and can skip the
    batches already trained.

    As the official ``DistributedSampler`` + ``DataLoader`` (the default): the permutation is
    padded by repeating its head to a multiple of ``world_size``, rank r takes every
    ``world_size``-th index from r, and the epoch ends with a partial batch (every rank's of
    the same size, so gathered losses and SyncBatchNorm see equal shares). The permutation is
    ``torch.randperm`` seeded by ``epoch_seed``: for seed 0 that is the official sampler's
    ``0 + epoch``, so the same batches (the official code never sets another seed).
    Deviations: a padded duplicate (at most ``world_size - 1`` per epoch) gets the same views
    as its first occurrence, since views depend on (seed, epoch, index) only; ``drop_last=True``
    drops the permutation's tail so every rank yields full batches only (our former default).

    Yields ``epoch * dataset_size + image_index``: ``MultiCropDataset`` decodes the epoch from it,
    so a sample's augmentation depends on (seed, epoch, index) only, whatever the worker count.
    """

    def __init__(self, dataset_size: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, drop_last: bool = False):
        if drop_last and dataset_size < batch_size * world_size:
            raise ValueError(f"the dataset has {dataset_size} images, fewer than one global "
                             f"batch ({batch_size} x {world_size} processes)")
        self.dataset_size, self.batch_size, self.drop_last = dataset_size, batch_size, drop_last
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.start_batch = 0, 0
        if self.last_batch_size < min(2, batch_size):
            # a batch of one image: BatchNorm refuses it, its batch variance is undefined
            raise ValueError(f"{dataset_size} images over {world_size} process(es) leave a "
                             f"last batch of 1 image per process ({batch_size} per process "
                             "otherwise): BatchNorm and the variance term need 2; change "
                             "optim.batch_size or set data.drop_last=true")

    @property
    def per_rank(self) -> int:
        """Images this process sees per epoch."""
        if self.drop_last:
            return self.batches_per_epoch * self.batch_size
        return samples_per_rank(self.dataset_size, self.world_size)

    @property
    def last_batch_size(self) -> int:
        """Images per process in the epoch's last batch (``batch_size`` when it is full)."""
        return self.per_rank - (self.batches_per_epoch - 1) * self.batch_size

    @property
    def batches_per_epoch(self) -> int:
        return epoch_steps(self.dataset_size, self.batch_size, self.world_size, self.drop_last)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(self.per_rank - self.start_batch * self.batch_size, 0)

    def __iter__(self):
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.dataset_size, generator=g)
        used = self.per_rank * self.world_size
        if used > self.dataset_size:  # the official padding: the head again, as often as needed
            order = order.repeat(-(-used // self.dataset_size))
        mine = order[:used][self.rank::self.world_size]
        offset = self.epoch * self.dataset_size
        for i in mine[self.start_batch * self.batch_size:].tolist():
            yield offset + i
