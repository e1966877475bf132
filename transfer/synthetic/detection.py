"""Synthetic detection datasets in the REAL on-disk formats (no detectron2 import).

Scenes come from ``pretrain.synthetic.render_scene`` (the same generator as the segmentation
sets): classes are ``pretrain.synthetic.CLASS_NAMES`` (textures; shapes and grey levels random).

- ``write_coco``: ``root/coco/{train2017,val2017}/*.jpg`` and
  ``root/coco/annotations/instances_{train,val}2017.json``, instances with polygon masks;
- ``write_voc_detection``: ``root/VOC2007`` (trainval + test) and ``root/VOC2012`` (trainval),
  each with ``JPEGImages/``, ``Annotations/*.xml`` and ``ImageSets/Main/*.txt``.

These are the layouts detectron2's builtin datasets expect under ``$DETECTRON2_DATASETS``
(folder names from ``transfer/datasets.py``), so its own loaders read them
(``load_coco_json``, ``load_voc_instances``).

Deviation from a photograph dataset: an object's visible region can have holes (occlusion);
COCO polygons cannot, so a hole is filled in the polygon mask. Boxes and areas are computed
from the polygons, so the annotations are self-consistent.
"""
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pretrain.synthetic import CLASS_NAMES, render_scene
from transfer import datasets as ds

JPEG_QUALITY = 92


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a binary mask as COCO polygons ``[x0, y0, x1, y1, ...]``.

    Points are pixel centres shifted by half a pixel (COCO's continuous coordinates);
    pieces with fewer than 3 points are dropped."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64) + 0.5
        if len(points) >= 3:
            polygons.append([round(float(v), 2) for v in points.reshape(-1)])
    return polygons


def _coco_split(root: Path, split: str, count: int, size: int, rng: np.random.Generator,
                first_image_id: int, first_ann_id: int) -> dict:
    folder = root / ds.coco_split(split)[0]
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = first_ann_id
    for image_id in range(first_image_id, first_image_id + count):
        image, objects = render_scene(rng, size, size)
        file_name = f"{image_id:012d}.jpg"
        Image.fromarray(image).save(folder / file_name, quality=JPEG_QUALITY)
        images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
        for obj in objects:
            polygons = mask_to_polygons(obj.mask)
            if not polygons:
                continue
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, size, size))
            area = float(mask_utils.area(rle))
            if area < 1:
                continue
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": obj.class_id + 1,
                "segmentation": polygons, "area": area,
                "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
            ann_id += 1
    return {
        "info": {"description": "VICRegL suite synthetic scenes (pretrain/synthetic.py)"},
        "licenses": [],
        "images": images, "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                       for i, name in enumerate(CLASS_NAMES)],
    }


def write_coco(root: str | Path, num_train: int, num_val: int, size: int = 128,
               seed: int = 0) -> dict[str, int]:
    """Write a COCO-format instance segmentation set under ``root/coco``.

    Category ids are 1..``NUM_CLASSES`` in ``CLASS_NAMES`` order (detectron2 maps them to contiguous ids).
    Returns the number of images per split, e.g. ``{"train2017": 16, "val2017": 8}``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = {}
    next_image, next_ann = 1, 1
    for split, count in (("train", num_train), ("val", num_val)):
        image_dir, json_file = ds.coco_split(split)
        data = _coco_split(root, split, count, size, rng, next_image, next_ann)
        next_image += count
        next_ann += len(data["annotations"])
        (root / json_file).parent.mkdir(parents=True, exist_ok=True)
        (root / json_file).write_text(json.dumps(data))
        counts[Path(image_dir).name] = count
    return counts


def _voc_xml(file_id: str, folder: str, size: int, objects) -> ET.ElementTree:
    """A VOC annotation. VOC boxes are 1-based and inclusive: pixel columns x0..x1-1 are
    written as xmin = x0 + 1, xmax = x1 (detectron2's loader subtracts 1 from xmin/ymin)."""
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = folder
    ET.SubElement(annotation, "filename").text = f"{file_id}.jpg"
    size_node = ET.SubElement(annotation, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_node, tag).text = str(value)
    ET.SubElement(annotation, "segmented").text = "0"
    for obj in objects:
        x0, y0, x1, y1 = obj.bbox
        node = ET.SubElement(annotation, "object")
        ET.SubElement(node, "name").text = CLASS_NAMES[obj.class_id]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "0"
        box = ET.SubElement(node, "bndbox")
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(annotation)
    return ET.ElementTree(annotation)


def _voc_split(year_dir: Path, split: str, ids: list[str], size: int,
               rng: np.random.Generator) -> None:
    for sub in (ds.VOC_DETECTION_IMAGES, ds.VOC_DETECTION_ANNOTATIONS, ds.VOC_DETECTION_SPLITS):
        (year_dir / sub).mkdir(parents=True, exist_ok=True)
    for file_id in ids:
        image, objects = render_scene(rng, size, size)
        Image.fromarray(image).save(year_dir / ds.VOC_DETECTION_IMAGES / f"{file_id}.jpg",
                                    quality=JPEG_QUALITY)
        _voc_xml(file_id, year_dir.name, size, objects).write(
            year_dir / ds.VOC_DETECTION_ANNOTATIONS / f"{file_id}.xml")
    (year_dir / ds.VOC_DETECTION_SPLITS / f"{split}.txt").write_text(
        "".join(f"{i}\n" for i in ids))


def write_voc_detection(root: str | Path, num_train: int, num_val: int, size: int = 128,
                        seed: int = 0) -> dict[str, int]:
    """Write VOC-format detection sets under ``root/VOC2007`` and ``root/VOC2012``.

    The ``num_train`` training images are split between VOC2007/trainval (the larger half)
    and VOC2012/trainval, as the 07+12 protocol trains on both; the ``num_val`` images are
    VOC2007/test (VOC2012 has no public test annotations). Returns images per split.
    Every list gets at least 2 images: detectron2's VOC loader (``np.loadtxt``) cannot read
    a one-line list.
    """
    if num_train < 4 or num_val < 2:
        raise ValueError(f"need num_train >= 4 (2 each for VOC2007 and VOC2012 trainval) and "
                         f"num_val >= 2, got {num_train} and {num_val}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    n07 = (num_train + 1) // 2
    splits = (
        ("VOC2007", "trainval", [f"{i:06d}" for i in range(1, n07 + 1)]),
        ("VOC2012", "trainval", [f"2012_{i:06d}" for i in range(1, num_train - n07 + 1)]),
        ("VOC2007", "test", [f"{i:06d}" for i in range(n07 + 1, n07 + num_val + 1)]),
    )
    for year, split, ids in splits:
        _voc_split(root / year, split, ids, size, rng)
    return {f"{year}/{split}": len(ids) for year, split, ids in splits}
