"""Dataset registration under ONE data root, with detectron2's own loaders.

detectron2 registers its builtin datasets when it is imported, under ``$DETECTRON2_DATASETS``
(default ``datasets``). ``register_datasets(root, names)`` re-registers the names a config uses
under ``root`` (the ``--data-root`` of ``tools/det_train.py``), so the root can be an argument,
and adds the synthetic sets written by ``transfer.synthetic.detection`` (same layouts, the
``pretrain.synthetic.CLASS_NAMES`` classes). Layout under ``root``:

    coco/{train2017,val2017}/, coco/annotations/instances_{train,val}2017.json
    VOC2007/{JPEGImages,Annotations,ImageSets/Main}/, VOC2012/...
"""
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_pascal_voc
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASS_NAMES

from pretrain.synthetic import CLASS_NAMES as SYNTHETIC_CLASS_NAMES

from .annotations import check_coco_annotations

_COCO = {"train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
         "val": ("coco/val2017", "coco/annotations/instances_val2017.json")}
_VOC = {"2007_trainval": ("VOC2007", "trainval", 2007),
        "2012_trainval": ("VOC2012", "trainval", 2012),
        "2007_test": ("VOC2007", "test", 2007)}
COCO_NAMES = {f"coco_2017_{s}": s for s in _COCO} | {f"synthetic_coco_{s}": s for s in _COCO}
VOC_NAMES = {f"voc_{s}": s for s in _VOC} | {f"synthetic_voc_{s}": s for s in _VOC}


def _require(path: Path, name: str) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {name}: {path} does not exist; expected the detectron2 layout under the "
            "data root (--data-root or $DETECTRON2_DATASETS; see docs/detection.md)")


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def register_dataset(root: str | Path, name: str) -> None:
    """(Re)register one dataset of ``COCO_NAMES`` / ``VOC_NAMES`` under ``root``."""
    root = Path(root)
    synthetic = name.startswith("synthetic_")
    if name in COCO_NAMES:
        image_dir, json_file = (root / p for p in _COCO[COCO_NAMES[name]])
        _require(json_file, name)
        _require(image_dir, name)
        check_coco_annotations(json_file, name)  # parse now: detectron2 reads it lazily
        metadata = ({"thing_classes": list(SYNTHETIC_CLASS_NAMES)} if synthetic
                    else _get_builtin_metadata("coco"))
        _unregister(name)
        register_coco_instances(name, metadata, str(json_file), str(image_dir))
    elif name in VOC_NAMES:
        folder, split, year = _VOC[VOC_NAMES[name]]
        dirname = root / folder
        _require(dirname / "ImageSets" / "Main" / f"{split}.txt", name)
        _unregister(name)
        register_pascal_voc(name, str(dirname), split, year,
                            SYNTHETIC_CLASS_NAMES if synthetic else VOC_CLASS_NAMES)
        MetadataCatalog.get(name).evaluator_type = "pascal_voc"
    else:
        raise KeyError(f"no data-root registration for {name!r}; known: "
                       f"{', '.join(sorted(COCO_NAMES) + sorted(VOC_NAMES))}")


def register_datasets(root: str | Path, names) -> list[str]:
    """Register each of ``names`` that we know under ``root``; names we do not know must
    already be registered (by the user's own code). Returns the names registered here."""
    done = []
    for name in dict.fromkeys(names):
        if name in COCO_NAMES or name in VOC_NAMES:
            register_dataset(root, name)
            done.append(name)
        elif name not in DatasetCatalog.list():
            raise KeyError(f"dataset {name!r} is not registered and has no data-root layout; "
                           f"known: {', '.join(sorted(COCO_NAMES) + sorted(VOC_NAMES))}")
    return done


def check_num_classes(cfg) -> None:
    """Fail early when ``ROI_HEADS.NUM_CLASSES`` does not match the datasets' class lists."""
    expected = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and len(classes) != expected:
            raise ValueError(f"MODEL.ROI_HEADS.NUM_CLASSES is {expected} but dataset {name} has "
                             f"{len(classes)} classes; set MODEL.ROI_HEADS.NUM_CLASSES "
                             f"{len(classes)}")
