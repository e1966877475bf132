"""The data of the dense nearest-neighbour evaluation, read through MMSegmentation.

The suite's segmentation config decides everything about the data: its train/val dataset
definitions are built by mmseg's own dataset classes (same classes, ignore index,
``reduce_zero_label``, split files), the data root and input sizes are set by the same
helpers as tools/seg_train.py (``overrides.set_data_root`` / ``set_crop_size``), and images
are normalised with the config's data preprocessor (mean, std, BGR -> RGB).

Memory images go through the config's *train* pipeline (its random resize, crop, flip and
photometric distortion: the dataset's own augmentation) unless ``augment=False``, when they
get the val pipeline; validation images get the val pipeline (resize, labels at their
original size, as mmseg's whole-image testing).
"""
import copy
import random
from functools import partial

import numpy as np
import torch
from mmengine.config import Config
from torch.utils.data import DataLoader, Subset

from . import overrides


def load_config(config: str, data_root: str, crop_size: int | None = None,
                cfg_options: dict | None = None) -> Config:
    """The segmentation config with its datasets under ``data_root`` (and scaled inputs)."""
    cfg = Config.fromfile(config)
    overrides.set_data_root(cfg, data_root)
    cfg.reference_crop = list(cfg.crop_size)  # the protocol's, before any test scaling
    if crop_size:
        overrides.set_crop_size(cfg, crop_size)
    cfg.merge_from_dict(cfg_options or {})
    return cfg


def _set_pipeline(node: dict, pipeline: list) -> None:
    """Replace the pipeline of a dataset dict and of every dataset it wraps."""
    if "pipeline" in node or "data_root" in node:
        node["pipeline"] = copy.deepcopy(pipeline)
    if isinstance(node.get("dataset"), dict):
        _set_pipeline(node["dataset"], pipeline)
    for child in node.get("datasets", []) or []:
        _set_pipeline(child, pipeline)


def build_split(cfg: Config, split: str, augment: bool = True):
    """mmseg's dataset for ``split`` ("train" or "val"); the train split with the val
    pipeline when ``augment`` is False."""
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    node = copy.deepcopy(cfg[f"{split}_dataloader"]["dataset"]).to_dict()
    if split == "train" and not augment:
        _set_pipeline(node, cfg.val_dataloader.dataset.pipeline)
    return DATASETS.build(node)


def dataset_meta(dataset) -> tuple[list[str], int]:
    """(class names, ignore index) of an mmseg dataset (or a ConcatDataset of them)."""
    inner = dataset.datasets[0] if hasattr(dataset, "datasets") else dataset
    return list(dataset.metainfo["classes"]), int(getattr(inner, "ignore_index", 255))


class Normaliser:
    """The config's ``SegDataPreProcessor`` normalisation for one uint8 CHW image."""

    def __init__(self, preprocessor: dict):
        self.mean = torch.tensor(preprocessor["mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(preprocessor["std"], dtype=torch.float32).view(3, 1, 1)
        self.bgr_to_rgb = bool(preprocessor.get("bgr_to_rgb", False))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        image = image.float()
        if self.bgr_to_rgb:
            image = image.flip(0)
        return (image - self.mean) / self.std


def _unpack(batch: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """mmseg's packed samples -> [(uint8 image (3, H, W), label (H, W))]."""
    return [(s["inputs"], s["data_samples"].gt_sem_seg.data[0]) for s in batch]


def _seed_worker(worker_id: int, base: int) -> None:
    # mmcv's transforms draw from numpy and random: seed them per worker and epoch
    np.random.seed((base + worker_id) % 2**32)
    random.seed(base + worker_id)


def loader(dataset, indices: list[int] | None, batch_size: int, workers: int,
           seed: int) -> DataLoader:
    """Ordered batches of (image, label) pairs; augmentation seeded by ``seed``."""
    np.random.seed(seed % 2**32)
    random.seed(seed)
    part = dataset if indices is None else Subset(dataset, indices)
    return DataLoader(part, batch_size=batch_size, num_workers=workers, shuffle=False,
                      collate_fn=_unpack, worker_init_fn=partial(_seed_worker, base=seed))
