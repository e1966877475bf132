"""Synthetic scenes as an ImageNet-layout ImageFolder: the pretraining images and the global
(image-level) classification task of the demo.

``root/train/<class>/scene_<i>.jpg`` and, when asked, ``root/val/<class>/...`` (the layout
``pretrain.data.ImageFolderDataset`` and ``transfer.evaluation.classification`` read); the
folder is the scene's image-level class in its world (``pretrain.synthetic.WORLDS``: the
largest object's class in ``mixed``, the class all objects but one share in ``dominant``).
"""
from pathlib import Path

import numpy as np

from pretrain.common.files import atomic_path
from pretrain.synthetic import CLASS_NAMES, NUM_CLASSES, render_world_scene
from transfer.datasets import IMAGEFOLDER_SPLITS


def _write_split(folder: Path, count: int, size: int, rng: np.random.Generator,
                 num_classes: int, world: str) -> None:
    """``count`` scenes as ``folder/<class>/scene_<i>.jpg``; scenes without an object (only
    possible in tiny images) are redrawn, so every file has a class."""
    from PIL import Image

    written = 0
    while written < count:
        image, _, label = render_world_scene(rng, size, world, num_classes)
        if label is None:
            continue
        target = folder / CLASS_NAMES[label] / f"scene_{written:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            Image.fromarray(image).save(tmp, format="JPEG", quality=92)
        written += 1


def write_image_folder(root: str | Path, num_images: int, size: int = 96, seed: int = 0,
                       num_classes: int = NUM_CLASSES, num_val: int = 0,
                       world: str = "mixed") -> Path:
    """Write scenes as an ImageNet-layout ImageFolder: ``root/train/<class>/*.jpg`` (the
    pretraining images) and, when ``num_val`` > 0, ``root/val/<class>/*.jpg`` (held-out scenes
    for the global evaluation, drawn from another stream of the same seed). The folder is the
    scene's class in ``world`` (``render_world_scene``). Returns ``root/train``."""
    if num_images < 1 or num_val < 0:
        raise ValueError(f"need num_images >= 1 and num_val >= 0, got {num_images}, {num_val}")
    train, val = (Path(root) / split for split in IMAGEFOLDER_SPLITS)
    _write_split(train, num_images, size, np.random.default_rng([seed, 0]), num_classes, world)
    if num_val:
        _write_split(val, num_val, size, np.random.default_rng([seed, 1]), num_classes, world)
    return train
