"""Check a segmentation dataset's on-disk layout before MMSegmentation reads it.

mmseg's dataset classes fail late and vaguely on a wrong layout (an ``assert`` on a missing
split file, a ``FileNotFoundError`` deep in a worker, or silently zero images). These checks
run first and name every problem: the file, the path that was expected, and the counts.
They list files and open a few label maps; they never import mmseg.

``check_dataset(name, data_root)`` looks under the dataset's sub-folder of the one data root
(``VOCdevkit/VOC2012``, ``cityscapes``, ``ade/ADEChallengeData2016``); the names, folders,
file patterns and released sizes (checked when ``full=True``) are transfer/datasets.py's.
"""
from dataclasses import dataclass, field
from pathlib import Path

from transfer import datasets as ds

SAMPLED_LABELS = 4  # label maps opened per split to check their mode and values


class DatasetLayoutError(ValueError):
    """The dataset at ``root`` does not have the layout mmseg expects; the message lists why."""


@dataclass
class LayoutReport:
    dataset: str
    root: Path
    counts: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        counts = ", ".join(f"{split} {n}" for split, n in self.counts.items())
        return f"{self.dataset} at {self.root}: {counts} images, layout OK"


class _Problems:
    def __init__(self, dataset: str, root: Path):
        self.dataset, self.root, self.lines = dataset, root, []

    def add(self, text: str) -> None:
        self.lines.append(text)

    def missing(self, what: str, expected: list[Path], total: int) -> None:
        if expected:
            shown = "\n      ".join(str(p) for p in expected[:5])
            more = f"\n      ... and {len(expected) - 5} more" if len(expected) > 5 else ""
            self.add(f"{len(expected)} of {total} {what} missing; expected:\n      {shown}{more}")

    def raise_if_any(self, hint: str = "") -> None:
        if self.lines:
            body = "\n  - ".join(self.lines)
            raise DatasetLayoutError(f"{self.dataset} layout at {self.root} is not usable:\n"
                                     f"  - {body}" + (f"\n{hint}" if hint else ""))


def _need_dir(problems: _Problems, path: Path, what: str) -> bool:
    if not path.is_dir():
        problems.add(f"missing folder {path} ({what})")
        return False
    return True


def _check_sampled_labels(problems: _Problems, images: list[Path], labels: list[Path],
                          modes: tuple[str, ...], valid: set[int]) -> None:
    """``_check_label`` on the first SAMPLED_LABELS pairs whose files exist (opening every
    map of a real dataset would take minutes; the evaluation checks every evaluated one)."""
    for image, label in list(zip(images, labels))[:SAMPLED_LABELS]:
        if image.is_file() and label.is_file():
            _check_label(problems, label, image, modes, valid)


def _check_label(problems: _Problems, label: Path, image: Path, modes: tuple[str, ...],
                 valid: set[int]) -> None:
    """Open one label map: readable, the right PNG mode, the image's size, known values."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(label) as im:
            mode, size, values = im.mode, im.size, set(np.unique(np.asarray(im)).tolist())
        with Image.open(image) as im:
            image_size = im.size
    except OSError as exc:
        problems.add(f"cannot read {label} or {image}: {exc}")
        return
    if mode not in modes:
        problems.add(f"{label}: PNG mode {mode!r}, expected {' or '.join(modes)} "
                     "(class indices, not colours)")
    if size != image_size:
        problems.add(f"{label}: size {size} differs from its image {image} {image_size}")
    unknown = sorted(values - valid)
    if unknown:
        problems.add(f"{label}: label values {unknown[:10]} outside the dataset's "
                     f"{min(valid)}..{max(v for v in valid if v != 255)} (and 255 = ignore)")


def _check_counts(problems: _Problems, dataset: str, counts: dict[str, int], full: bool) -> None:
    for split, n in counts.items():
        if n == 0:
            problems.add(f"split {split!r} has no images")
        elif full and n != ds.SEGMENTATION[dataset].full_counts[split]:
            problems.add(f"split {split!r} has {n} images, the released dataset has "
                         f"{ds.SEGMENTATION[dataset].full_counts[split]} (pass --allow-partial "
                         "for a subset)")


def _read_ids(problems: _Problems, path: Path) -> list[str]:
    if not path.is_file():
        problems.add(f"missing split file {path}")
        return []
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        problems.add(f"split file {path} is empty")
    return ids


def check_voc12aug(voc: str | Path, full: bool = False) -> LayoutReport:
    """``VOCdevkit/VOC2012`` with SBD's ``SegmentationClassAug`` and ``aug.txt``, as the
    ``pascal_voc12_aug`` dataset config reads it (train = train.txt + aug.txt, val = val.txt)."""
    voc = Path(voc)
    problems = _Problems("PASCAL VOC 2012 aug", voc)
    if not _need_dir(problems, voc, "the VOC2012 folder of VOCdevkit"):
        problems.raise_if_any()
    sets = voc / ds.VOC_SPLITS
    folders = {"train": ds.VOC_LABELS, "val": ds.VOC_LABELS, "aug": ds.VOC_AUG_LABELS}
    counts = {}
    for split, label_dir in folders.items():
        ids = _read_ids(problems, sets / f"{split}.txt")
        counts[split] = len(ids)
        images = [voc / ds.VOC_IMAGES / f"{i}.jpg" for i in ids]
        labels = [voc / label_dir / f"{i}.png" for i in ids]
        problems.missing(f"images listed in {split}.txt", [p for p in images if not p.is_file()],
                         len(ids))
        missing_labels = [p for p in labels if not p.is_file()]
        problems.missing(f"label maps for {split}.txt in {label_dir}", missing_labels, len(ids))
        if split == "aug" and missing_labels and len(missing_labels) == len(ids):
            problems.add(f"{ds.VOC_AUG_LABELS} is absent or empty: build it from SBD with "
                         "tools/prepare/voc_aug.py")
        valid = set(range(ds.VOC12AUG.num_classes)) | {ds.VOC_IGNORE}
        _check_sampled_labels(problems, images, labels, ("P", "L"), valid)
    _check_counts(problems, ds.VOC12AUG.name, counts, full)
    problems.raise_if_any()
    return LayoutReport(ds.VOC12AUG.name, voc, counts)


def check_cityscapes(city_root: str | Path, full: bool = False) -> LayoutReport:
    """``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` each with its
    ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (19 train ids, 255 ignore)."""
    city_root = Path(city_root)
    problems = _Problems("Cityscapes", city_root)
    counts = {}
    for split in ds.CITYSCAPES_SPLITS:
        image_dir = city_root / ds.CITYSCAPES_IMAGES / split
        gt_dir = city_root / ds.CITYSCAPES_ANNOTATIONS / split
        if not (_need_dir(problems, image_dir, f"{split} images")
                and _need_dir(problems, gt_dir, f"{split} fine annotations")):
            counts[split] = 0
            continue
        images = sorted(image_dir.glob(f"*/*{ds.CITYSCAPES_IMAGE_SUFFIX}"))
        counts[split] = len(images)
        labels = [ds.cityscapes_annotation(city_root, split, p) for p in images]
        missing = [p for p in labels if not p.is_file()]
        problems.missing(f"{split} labelTrainIds maps", missing, len(images))
        if missing and any(gt_dir.glob(f"*/*{ds.CITYSCAPES_POLYGON_SUFFIX}")):
            problems.add(f"{gt_dir} has polygons but no labelTrainIds: run "
                         "tools/prepare/cityscapes.py to render them")
        valid = set(range(ds.CITYSCAPES.num_classes)) | {255}
        _check_sampled_labels(problems, images, labels, ("L",), valid)
    if not problems.lines:
        _check_counts(problems, ds.CITYSCAPES.name, counts, full)
    problems.raise_if_any()
    return LayoutReport(ds.CITYSCAPES.name, city_root, counts)


def check_ade20k(ade: str | Path, full: bool = False) -> LayoutReport:
    """``images/{training,validation}/*.jpg`` each with ``annotations/.../<same stem>.png``
    (0 = other/ignored, 1..150 the classes)."""
    ade = Path(ade)
    problems = _Problems("ADE20k (ADEChallengeData2016)", ade)
    counts = {}
    for split in ds.ADE20K_SPLITS.values():
        image_dir, ann_dir = ade / ds.ADE20K_IMAGES / split, ade / ds.ADE20K_ANNOTATIONS / split
        if not (_need_dir(problems, image_dir, f"{split} images")
                and _need_dir(problems, ann_dir, f"{split} annotations")):
            counts[split] = 0
            continue
        images = sorted(image_dir.glob("*.jpg"))
        counts[split] = len(images)
        labels = [ann_dir / f"{p.stem}.png" for p in images]
        problems.missing(f"{split} annotation PNGs", [p for p in labels if not p.is_file()],
                         len(images))
        valid = set(range(ds.ADE20K.num_classes + 1))  # 0 = "other", ignored by mmseg
        _check_sampled_labels(problems, images, labels, ("L",), valid)
    if not problems.lines:
        _check_counts(problems, ds.ADE20K.name, counts, full)
    problems.raise_if_any()
    return LayoutReport(ds.ADE20K.name, ade, counts)


CHECKS = {ds.VOC12AUG.name: check_voc12aug, ds.CITYSCAPES.name: check_cityscapes,
          ds.ADE20K.name: check_ade20k}


def dataset_dir(name: str, data_root: str | Path) -> Path:
    if name not in ds.SEGMENTATION:
        raise ValueError(f"unknown dataset {name!r}; expected one of "
                         f"{', '.join(ds.SEGMENTATION)}")
    return ds.SEGMENTATION[name].folder(data_root)


def check_dataset(name: str, data_root: str | Path, full: bool = False) -> LayoutReport:
    """Check dataset ``name`` under the common ``data_root``; raises DatasetLayoutError."""
    return CHECKS[name](dataset_dir(name, data_root), full=full)
