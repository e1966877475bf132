"""Small synthetic segmentation datasets written in the REAL on-disk layouts.

Each writer renders scenes with ``pretrain.synthetic.render_scene`` (grey scenes of several
objects; an object's class is its texture, never its grey levels, shape or size) and saves
them exactly where and how the real dataset keeps its files, so MMSegmentation's own dataset
classes (``PascalVOCDataset``, ``CityscapesDataset``, ``ADE20KDataset``) read them unchanged
and the metrics measure whether the textures were learnt. No MMSegmentation import: numpy and
PIL only.

Layouts, relative to one data root (names and folders from ``transfer/datasets.py``):

- ``VOCdevkit/VOC2012``: ``JPEGImages/<id>.jpg``; ``SegmentationClass/<id>.png`` (palette
  PNG, 255 on a thin "void" outline, as VOC draws it) for the ``train.txt`` and ``val.txt``
  ids; ``SegmentationClassAug/<id>.png`` (grey PNG, no outline, as mmseg's SBD converter
  writes it) for every training id; ``ImageSets/Segmentation/{train,val,aug,trainaug}.txt``
  where ``aug.txt`` holds the training ids that are not in ``train.txt`` (mmseg's rule).
  Labels: 0 background, ``class_id + 1`` for the scene classes (``NUM_CLASSES`` of VOC's 21).
- ``cityscapes``: ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
  ``gtFine/<split>/<city>/<...>_gtFine_labelTrainIds.png``; images are 2:1 (size x 2*size).
  Labels are train ids: 0 ("road") background, 11, 12, ... (the "thing" classes, one per
  scene class) for the scene classes.
- ``ade/ADEChallengeData2016``: ``images/{training,validation}/ADE_{train,val}_%08d.jpg`` and
  ``annotations/.../*.png``; 0 = unlabelled (a thin outline; ignored by
  ``reduce_zero_label``), 1 background ("wall"), ``class_id + 2`` the scene classes.

Deviation from the real data, by design: far fewer classes are present (``NUM_CLASSES`` of
21/19/150), so per-class tables show the absent classes as null (never predicted and never in
the ground truth).
"""
from pathlib import Path

import numpy as np

from pretrain.synthetic import NUM_CLASSES, render_scene, semantic_map
from transfer import datasets as ds

# person, rider, car, ...: one "thing" train id per scene class (Cityscapes has 8: 11..18)
CITYSCAPES_THING_TRAIN_IDS = tuple(range(11, 11 + NUM_CLASSES))


def outline(label: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another label: the ~2 px band where two regions
    meet, which VOC and ADE20k leave unlabelled."""
    edge = np.zeros(label.shape, dtype=bool)
    horizontal = label[:, 1:] != label[:, :-1]
    vertical = label[1:, :] != label[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    return edge


def _rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, {"train": 0, "val": 1}[split]])


def _check_sizes(num_train: int, num_val: int, size: int) -> None:
    if num_train < 2 or num_val < 1:
        raise ValueError(f"need at least 2 training and 1 validation image, got "
                         f"{num_train}/{num_val}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels (objects need room), got {size}")


def _save(array: np.ndarray, path: Path, palette: list[int] | None = None) -> None:
    """RGB for (H, W, 3) arrays, grey ("L") for label maps, palette ("P") when given one."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)  # an "L" image becomes "P" with the same indices
    if path.suffix == ".jpg":
        image.save(path, quality=92)
    else:
        image.save(path)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def write_voc12aug(root: str | Path, num_train: int, num_val: int, size: int = 64,
                   seed: int = 0) -> Path:
    """PASCAL VOC 2012 + SBD ("VOC aug") as mmseg reads it; returns ``root/VOCdevkit/VOC2012``.

    The first half of the training ids play VOC's own ``train.txt`` (labels in
    ``SegmentationClass``), the rest SBD's extra images (``aug.txt``, labels only in
    ``SegmentationClassAug``)."""
    _check_sizes(num_train, num_val, size)
    voc = ds.VOC12AUG.folder(root)
    palette = ds.voc_palette()
    ids = {"train": [f"2012_{i:06d}" for i in range(num_train)],
           "val": [f"2012_{num_train + i:06d}" for i in range(num_val)]}
    voc_train = ids["train"][: max(1, num_train // 2)]
    for split, names in ids.items():
        rng = _rng(seed, split)
        for name in names:
            image, objects = render_scene(rng, size, size, NUM_CLASSES)
            label = semantic_map(objects, size, size, background=0, offset=1)
            _save(image, voc / ds.VOC_IMAGES / f"{name}.jpg")
            if split == "train":
                _save(label, voc / ds.VOC_AUG_LABELS / f"{name}.png")
            if split == "val" or name in voc_train:
                voc_label = np.where(outline(label), ds.VOC_IGNORE, label).astype(np.uint8)
                _save(voc_label, voc / ds.VOC_LABELS / f"{name}.png", palette)
    sets = voc / ds.VOC_SPLITS
    _write_lines(sets / "train.txt", voc_train)
    _write_lines(sets / "val.txt", ids["val"])
    _write_lines(sets / "aug.txt", [n for n in ids["train"] if n not in voc_train])
    _write_lines(sets / "trainaug.txt", ids["train"])
    return voc


def write_cityscapes(root: str | Path, num_train: int, num_val: int, size: int = 64,
                     seed: int = 0) -> Path:
    """Cityscapes (fine annotations, label train ids) as mmseg reads it; returns
    ``root/cityscapes``. Images are ``size`` x ``2*size``; training images are spread over two
    cities so the recursive city folders are exercised."""
    _check_sizes(num_train, num_val, size)
    city_root = ds.CITYSCAPES.folder(root)
    for split, count in zip(ds.CITYSCAPES_SPLITS, (num_train, num_val)):
        rng = _rng(seed, split)
        for i in range(count):
            city = f"synth{split}{i % 2}" if split == "train" else f"synth{split}"
            stem = f"{city}_{i:06d}_000019"
            image, objects = render_scene(rng, size, 2 * size, NUM_CLASSES)
            label = semantic_map(objects, size, 2 * size, background=0,
                                 offset=CITYSCAPES_THING_TRAIN_IDS[0])
            image_path = city_root / ds.CITYSCAPES_IMAGES / split / city / \
                f"{stem}{ds.CITYSCAPES_IMAGE_SUFFIX}"
            _save(image, image_path)
            _save(label, ds.cityscapes_annotation(city_root, split, image_path))
    return city_root


def write_ade20k(root: str | Path, num_train: int, num_val: int, size: int = 64,
                 seed: int = 0) -> Path:
    """ADE20k (SceneParsing, ADEChallengeData2016) as mmseg reads it; returns the
    ``ADEChallengeData2016`` folder."""
    _check_sizes(num_train, num_val, size)
    ade = ds.ADE20K.folder(root)
    for split, count in (("train", num_train), ("val", num_val)):
        folder, rng = ds.ADE20K_SPLITS[split], _rng(seed, split)
        for i in range(count):
            stem = f"ADE_{split}_{i + 1:08d}"
            image, objects = render_scene(rng, size, size, NUM_CLASSES)
            label = semantic_map(objects, size, size, background=1, offset=2)
            label = np.where(outline(label), 0, label).astype(np.uint8)
            _save(image, ade / ds.ADE20K_IMAGES / folder / f"{stem}.jpg")
            _save(label, ade / ds.ADE20K_ANNOTATIONS / folder / f"{stem}.png")
    return ade


WRITERS = {"voc": write_voc12aug, "cityscapes": write_cityscapes, "ade20k": write_ade20k}
