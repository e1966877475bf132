"""Synthetic COCO / VOC detection sets, read back with pycocotools and ElementTree (the
detectron2 loaders read them in test_det_detectron2.py)."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pretrain.synthetic import CLASS_NAMES
from transfer.synthetic.detection import mask_to_polygons, write_coco, write_voc_detection


def test_coco_layout_and_annotations(tmp_path):
    counts = write_coco(tmp_path, num_train=6, num_val=3, size=96, seed=1)
    assert counts == {"train2017": 6, "val2017": 3}
    for split, n in (("train", 6), ("val", 3)):
        coco = COCO(str(tmp_path / "coco" / "annotations" / f"instances_{split}2017.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASS_NAMES)
        assert len(coco.getImgIds()) == n
        assert len(coco.getAnnIds()) >= n  # every scene has at least one object, usually more
        for ann in coco.loadAnns(coco.getAnnIds()):
            img = coco.loadImgs(ann["image_id"])[0]
            image = Image.open(tmp_path / "coco" / f"{split}2017" / img["file_name"])
            assert image.size == (96, 96)
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96 and w > 0 and h > 0
            assert ann["iscrowd"] == 0 and all(len(p) >= 6 for p in ann["segmentation"])
            assert ann["area"] == pytest.approx(float(coco.annToMask(ann).sum()))
    ids_train = set(COCO(str(tmp_path / "coco/annotations/instances_train2017.json")).getImgIds())
    ids_val = set(COCO(str(tmp_path / "coco/annotations/instances_val2017.json")).getImgIds())
    assert not ids_train & ids_val


def test_polygons_follow_the_mask():
    yy, xx = np.mgrid[0:64, 0:64]
    mask = ((yy - 30) ** 2 + (xx - 25) ** 2 <= 14**2) | ((abs(yy - 10) < 4) & (abs(xx - 55) < 5))
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2  # two separate pieces, two polygons
    back = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 64, 64))) > 0
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.9


def test_coco_is_deterministic(tmp_path):
    write_coco(tmp_path / "a", 2, 1, 64, seed=5)
    write_coco(tmp_path / "b", 2, 1, 64, seed=5)
    for rel in ("coco/annotations/instances_train2017.json", "coco/val2017/000000000003.jpg"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_voc_layout_and_boxes(tmp_path):
    counts = write_voc_detection(tmp_path, num_train=5, num_val=2, size=80, seed=2)
    assert counts == {"VOC2007/trainval": 3, "VOC2012/trainval": 2, "VOC2007/test": 2}
    splits = (("VOC2007", "trainval"), ("VOC2012", "trainval"), ("VOC2007", "test"))
    lists = {(year, split): (tmp_path / year / "ImageSets/Main" / f"{split}.txt").read_text()
             for year, split in splits}
    lists = {key: text.split() for key, text in lists.items()}
    assert lists[("VOC2007", "trainval")] == ["000001", "000002", "000003"]
    assert lists[("VOC2012", "trainval")] == ["2012_000001", "2012_000002"]
    assert not set(lists[("VOC2007", "trainval")]) & set(lists[("VOC2007", "test")])
    for (year, _), ids in lists.items():
        for file_id in ids:
            root = ET.parse(tmp_path / year / "Annotations" / f"{file_id}.xml").getroot()
            assert root.findtext("filename") == f"{file_id}.jpg"
            assert (tmp_path / year / "JPEGImages" / f"{file_id}.jpg").is_file()
            for obj in root.findall("object"):
                assert obj.findtext("name") in CLASS_NAMES
                assert obj.findtext("difficult") == "0"  # the VOC evaluator reads these fields
                box = [int(obj.find("bndbox").findtext(t))
                       for t in ("xmin", "ymin", "xmax", "ymax")]
                assert 1 <= box[0] <= box[2] <= 80 and 1 <= box[1] <= box[3] <= 80  # 1-based


def test_voc_lists_need_two_images_each(tmp_path):
    with pytest.raises(ValueError, match="num_train >= 4"):
        write_voc_detection(tmp_path, num_train=3, num_val=2)
    with pytest.raises(ValueError, match="num_val >= 2"):
        write_voc_detection(tmp_path, num_train=4, num_val=1)
