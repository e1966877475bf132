"""The datasets' names and on-disk layouts under the one data root, kept in one place.

Every piece of code that finds a dataset's files takes the names from here: the layout checks
(``transfer/mmseg_side/layouts.py``), the preparation tools (``tools/prepare/``), the synthetic
writers (``transfer/synthetic/``) and the PCA maps. The segmentation configs
(``configs/segmentation/_base_/datasets/*.py``) repeat ``dataset_name`` and ``dataset_subdir``,
because an mmengine config cannot import this module; ``tests/test_datasets.py`` checks that
they agree with it. detectron2's builtin layout (COCO, VOC detection) is the one
``transfer/detectron2_side/data.py`` registers.

Layout under the data root::

    VOCdevkit/VOC2012/            PASCAL VOC 2012 + SBD "aug" (segmentation)
    cityscapes/                   Cityscapes, fine annotations as label train ids
    ade/ADEChallengeData2016/     ADE20k SceneParsing
    coco/                         COCO 2017 instances (detection)
    VOC2007/, VOC2012/            PASCAL VOC detection (detectron2's layout)
    imagenet/{train,val}/<class>/ ImageNet-style folders (pretraining, classification)

Strings and pathlib only: no torch, no framework.
"""
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SegmentationDataset:
    name: str  # ``dataset_name`` in configs/segmentation/_base_/datasets/
    subdir: str  # ``dataset_subdir`` there: the dataset's folder under the data root
    num_classes: int  # the classes the models predict (ignore labels apart)
    full_counts: dict[str, int]  # images per split of the released dataset

    def folder(self, data_root: str | Path) -> Path:
        return Path(data_root) / self.subdir


VOC12AUG = SegmentationDataset(  # train.txt + aug.txt = trainaug.txt, 10582 ids
    "voc12aug", "VOCdevkit/VOC2012", 21, {"train": 1464, "aug": 9118, "val": 1449})
CITYSCAPES = SegmentationDataset("cityscapes", "cityscapes", 19, {"train": 2975, "val": 500})
ADE20K = SegmentationDataset(
    "ade20k", "ade/ADEChallengeData2016", 150, {"training": 20210, "validation": 2000})
SEGMENTATION = {d.name: d for d in (VOC12AUG, CITYSCAPES, ADE20K)}

# ---- PASCAL VOC 2012 + SBD, inside VOC12AUG's folder
VOC_IMAGES = "JPEGImages"  # <id>.jpg
VOC_LABELS = "SegmentationClass"  # <id>.png, VOC's palette PNGs (train.txt and val.txt ids)
VOC_AUG_LABELS = "SegmentationClassAug"  # <id>.png, class indices from SBD (training ids)
VOC_SPLITS = "ImageSets/Segmentation"  # train.txt, val.txt, aug.txt, trainaug.txt
VOC_IGNORE = 255  # the void outline VOC draws between regions

# ---- Cityscapes, inside CITYSCAPES's folder: <dir>/<split>/<city>/<city>_<seq>_<frame><suffix>
CITYSCAPES_IMAGES = "leftImg8bit"
CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_ANNOTATIONS = "gtFine"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelTrainIds.png"  # what mmseg reads
CITYSCAPES_POLYGON_SUFFIX = "_gtFine_polygons.json"  # the release's, rendered by the prepare tool
CITYSCAPES_SPLITS = ("train", "val")

# ---- ADE20k, inside ADE20K's folder: images/<split>/<stem>.jpg, annotations/<split>/<stem>.png
ADE20K_IMAGES = "images"
ADE20K_ANNOTATIONS = "annotations"
ADE20K_SPLITS = {"train": "training", "val": "validation"}

# ---- detection, detectron2's builtin layout under the data root
COCO_SUBDIR = "coco"  # {train,val}2017/<id>.jpg, annotations/instances_{train,val}2017.json
VOC_DETECTION_IMAGES = "JPEGImages"
VOC_DETECTION_ANNOTATIONS = "Annotations"  # <id>.xml
VOC_DETECTION_SPLITS = "ImageSets/Main"  # trainval.txt, test.txt

# ---- ImageFolder: <subdir>/{train,val}/<class>/*.jpg, labels are the sorted class folders
IMAGEFOLDER_SUBDIR = "imagenet"
IMAGEFOLDER_SPLITS = ("train", "val")


def cityscapes_annotation(city_root: str | Path, split: str, image: Path,
                          suffix: str = CITYSCAPES_LABEL_SUFFIX) -> Path:
    """The ``gtFine`` file (labelTrainIds map, or polygons with another ``suffix``) of the
    ``leftImg8bit`` image ``image`` of ``split``."""
    name = image.name.replace(CITYSCAPES_IMAGE_SUFFIX, suffix)
    return Path(city_root) / CITYSCAPES_ANNOTATIONS / split / image.parent.name / name


def coco_split(split: str) -> tuple[str, str]:
    """(image folder, annotation file) of a COCO 2017 split, relative to the data root."""
    return (f"{COCO_SUBDIR}/{split}2017", f"{COCO_SUBDIR}/annotations/instances_{split}2017.json")


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved label index), 256 RGB triples flattened:
    the palette of VOC's ``SegmentationClass`` PNGs."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def add_data_root_arg(parser, holds: str) -> None:
    """The tools' ``--data-root``: the one data root every layout above lives under."""
    from pretrain.common.data_root import DATA_ROOT_ENV, data_root

    parser.add_argument("--data-root", default=str(data_root()),
                        help=f"root holding {holds} (default ${DATA_ROOT_ENV} or data)")
