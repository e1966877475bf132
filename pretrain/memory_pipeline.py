"""The in-memory batched pipeline (``data.pipeline=memory``), for data sets that fit in memory:
the CPU demo, synthetic scenes, quick GPU runs.

The images are decoded once into one uint8 tensor (N, 3, H, W) that lives on the training
device. A sample then carries only its random draws, made per (seed, epoch, image) by
``FastMultiCrop.draw`` in exactly the order of the ``pil`` and ``fast`` pipelines: the same
crop boxes, flips, photometric parameters and so the same location grids
(``tests/test_memory_pipeline.py`` checks this). ``to_device`` then builds the whole batch's
views at once on the device:

- every view of one crop size is cut by ONE ``torchvision.ops.roi_align`` call over the batch
  (bilinear, the adaptive sampling grid averages about ceil(box / size)^2 samples per output
  pixel, an antialiasing box filter);
- flips are one indexed ``flip``; the crops are rounded to uint8 and the photometric part is
  ``pretrain.photometric.apply_photometric``, batched per crop size.

Deviation from the other pipelines, by design: bilinear area sampling instead of antialiased
bicubic resizing (pixels differ slightly; the crop boxes and grids do not). Unreadable images
are found while loading, logged with their path, counted (``data.max_corrupt``) and left out.
Every image must have the size of the first (``data.kind=synthetic`` renders them so).
"""
import logging
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset
from torchvision.ops import roi_align

from .data import UnreadableImageError, sample_generator
from .fast_augment import FLIPPED, DecodedImages, FastMultiCrop
from .grouping import group_indices

logger = logging.getLogger(__name__)


def load_images(base: Dataset, max_corrupt: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode every image of ``base`` once: ``(images (N, 3, H, W) uint8, labels (N,) long,
    unreadable paths)``. More than ``max_corrupt`` unreadable images, or an image whose size
    differs from the first's, raise an error naming the file."""
    decoded = DecodedImages(base)
    images, labels, skipped, first = [], [], [], None
    for i in range(len(decoded)):
        try:
            image, label, path = decoded[i]
        except UnreadableImageError as err:
            logger.warning("skipping unreadable image %s: %s", err.path, err.__cause__)
            skipped.append(err.path)
            if len(skipped) > max_corrupt:
                raise RuntimeError(f"{len(skipped)} unreadable images (more than "
                                   f"data.max_corrupt); first ones: {skipped[:5]}") from err
            continue
        if first is None:
            first = (tuple(image.shape), path)
        elif tuple(image.shape) != first[0]:
            raise ValueError(f"data.pipeline=memory needs images of one size: {path} is "
                             f"{tuple(image.shape[1:])} (H, W), {first[1]} is "
                             f"{first[0][1:]}; resize the data set or use data.pipeline=fast")
        images.append(image)
        labels.append(int(label))
    if not images:
        raise ValueError(f"{type(base).__name__}: no readable image ({len(skipped)} unreadable)")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), skipped


class MemoryDraws(Dataset):
    """The draws of every view of a sample; index = epoch * N + image, as the other
    pipelines (``pretrain.sampler.ResumableDistributedSampler``)."""

    def __init__(self, num_images: int, height: int, width: int, labels: torch.Tensor,
                 transform: FastMultiCrop, seed: int, skipped: Sequence[str] = ()):
        self.num_images, self.height, self.width = num_images, height, width
        self.labels, self.transform, self.seed = labels, transform, seed
        self.skipped = list(skipped)  # unreadable at load time, for the run's count

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            raise IndexError(f"negative index {index}")
        epoch, image = divmod(index, self.num_images)
        g = sample_generator(self.seed, epoch, image)
        boxes, grids, rows = [], [], []
        for crop in self.transform.spec.crops:
            box, grid, row = self.transform.draw(self.height, self.width, crop, g)
            boxes.append(box)
            grids.append(grid)
            rows.append(row)
        return {"image": image, "boxes": torch.tensor(boxes, dtype=torch.float32),
                "locations": grids, "photometric": torch.stack(rows),
                "label": int(self.labels[image]), "skipped": []}


def crop_views(images: torch.Tensor, boxes: Sequence[torch.Tensor], sizes: Sequence[int]
               ) -> list[torch.Tensor]:
    """uint8 (B, 3, H, W) images and per view (B, 4) boxes (top, left, h, w) -> per view
    (B, 3, S, S) float crops, one ``roi_align`` per crop size."""
    batch = images.shape[0]
    source = images.float()
    out: list = [None] * len(boxes)
    for index in group_indices(sizes):
        rois = []
        for i in index:
            top, left, h, w = boxes[i].to(source.device).unbind(1)
            owner = torch.arange(batch, device=source.device, dtype=source.dtype)
            # aligned=True: pixel k covers [k, k + 1), so the box [left, left + w) is exact
            rois.append(torch.stack([owner, left, top, left + w, top + h], dim=1))
        size = sizes[index[0]]
        crops = roi_align(source, torch.cat(rois), output_size=(size, size),
                          spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        for i, c in zip(index, crops.split(batch)):
            out[i] = c
    return out


def build_views(images: torch.Tensor, batch: dict, sizes: Sequence[int]) -> list[torch.Tensor]:
    """The flipped uint8 crops of a collated batch of draws (photometric part still to
    apply); ``images`` is the whole uint8 store on the training device."""
    device = images.device
    chosen = images.index_select(0, batch["image"].to(device, non_blocking=True))
    views = []
    for crop, params in zip(crop_views(chosen, batch["boxes"], sizes), batch["photometric"]):
        flipped = (params[:, FLIPPED] > 0).to(device, non_blocking=True).view(-1, 1, 1, 1)
        crop = torch.where(flipped, crop.flip(-1), crop)
        views.append(crop.round_().clamp_(0, 255).to(torch.uint8))
    return views


def memory_dataset(base: Dataset, transform: FastMultiCrop, seed: int, max_corrupt: int,
                   device: torch.device) -> tuple[MemoryDraws, torch.Tensor]:
    """``(draws dataset, image store on device)`` of ``base``."""
    images, labels, skipped = load_images(base, max_corrupt)
    logger.info("data.pipeline=memory: %d images of %s in memory (%.1f MiB)%s", len(images),
                tuple(images.shape[1:]), images.numel() / 2**20,
                f", {len(skipped)} unreadable left out" if skipped else "")
    draws = MemoryDraws(len(images), images.shape[2], images.shape[3], labels, transform, seed,
                        skipped)
    return draws, images.to(device)
