"""The input pipeline the engine (and the benchmark) run, chosen by ``data.pipeline``.

- ``pil``: ``MultiCropDataset`` + ``MultiCropAugmentation``: the official per-image PIL
  augmentation in the DataLoader workers, float views shipped to the training process.
- ``fast``: ``FastMultiCropDataset``: workers decode once and crop/flip on uint8
  (``pretrain.fast_augment``); the photometric part is applied batched
  (``pretrain.photometric``) on the training GPU, or, when training on the CPU, in the
  workers' collate function (so it still runs in parallel). Same crop boxes, flips and
  photometric parameters per (seed, epoch, image) as ``pil``.
- ``memory``: ``pretrain.memory_pipeline``: every image decoded once into one uint8 tensor on
  the training device; samples carry only their draws (the same as ``fast``'s), and each
  step's views are cut for the whole batch at once (``roi_align``) and augmented batched.
  For data sets that fit in memory (the CPU demo, synthetic scenes).

``build_pipeline`` returns ``(dataset, collate_fn, to_device)``; ``to_device(batch)`` gives
``(views, locations, labels)`` on the device, views normalised and in the training memory
format.
"""
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from .data import MultiCropDataset, collate_multicrop
from .fast_augment import FastMultiCrop, FastMultiCropDataset
from .memory_pipeline import build_views, memory_dataset
from .grouping import same_shape
from .photometric import apply_photometric
from .transforms import MultiCropAugmentation

PIPELINES = ("pil", "fast", "memory")


def photometric_views(views: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                      channels_last: bool) -> list[torch.Tensor]:
    """``apply_photometric`` once per crop size (views of one size are batched together)."""
    out: list = [None] * len(views)
    for index in same_shape(views):
        done = apply_photometric(torch.cat([views[i] for i in index]),
                                 torch.cat([params[i] for i in index]), channels_last)
        for i, v in zip(index, done.chunk(len(index))):
            out[i] = v
    return out


class FastCollate:
    """``collate_multicrop``, then (``photometric=True``, for CPU training) the photometric part
    in the worker; a class so that worker processes can pickle it."""

    def __init__(self, photometric: bool, channels_last: bool):
        self.photometric, self.channels_last = photometric, channels_last

    def __call__(self, batch):
        out = collate_multicrop(batch)
        if self.photometric:
            out["views"] = photometric_views(out["views"], out.pop("photometric"),
                                             self.channels_last)
        return out


def build_pipeline(kind: str, base: Dataset, augmentation: MultiCropAugmentation, seed: int,
                   device: torch.device, channels_last: bool, max_corrupt: int = 100):
    """``(dataset, collate_fn, to_device)`` for ``kind`` in ``PIPELINES``."""
    if kind not in PIPELINES:
        raise ValueError(f"data.pipeline must be one of {PIPELINES}, got {kind!r}")
    memory = torch.channels_last if channels_last else torch.contiguous_format
    store, sizes = None, [crop["size"] for crop in augmentation.crops]
    if kind == "memory":
        dataset, store = memory_dataset(base, FastMultiCrop(augmentation), seed, max_corrupt,
                                        device)
        collate = collate_multicrop
    elif kind == "pil":
        dataset, collate = MultiCropDataset(base, augmentation, seed=seed), collate_multicrop
    else:
        dataset = FastMultiCropDataset(base, FastMultiCrop(augmentation), seed=seed)
        collate = FastCollate(photometric=device.type == "cpu", channels_last=channels_last)

    def to_device(batch: dict):
        if store is not None:
            views = build_views(store, batch, sizes)
        else:
            views = [v.to(device, non_blocking=True) for v in batch["views"]]
        if "photometric" in batch:
            views = photometric_views(views, batch["photometric"], channels_last)
        views = [v.contiguous(memory_format=memory) for v in views]
        locations = [g.to(device, non_blocking=True) for g in batch["locations"]]
        return views, locations, batch["labels"].to(device, non_blocking=True)

    return dataset, collate, to_device
