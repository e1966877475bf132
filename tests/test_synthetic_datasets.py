"""Synthetic datasets: the real layouts and label conventions, learnable structure, the CLI."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrain.synthetic import CLASS_NAMES, image_class, render_scene
from transfer.mmseg_side.layouts import check_dataset
from transfer.synthetic.image_folder import write_image_folder
from transfer.synthetic.segmentation import write_ade20k, write_cityscapes, write_voc12aug

ROOT = Path(__file__).resolve().parent.parent


def values(path: Path) -> set[int]:
    return set(np.unique(np.asarray(Image.open(path))).tolist())


def test_voc_aug_layout_and_label_conventions(tmp_path):
    voc = write_voc12aug(tmp_path, num_train=6, num_val=3, size=48, seed=0)
    sets = voc / "ImageSets" / "Segmentation"
    train, aug, val = ((sets / f"{split}.txt").read_text().split()
                       for split in ("train", "aug", "val"))
    assert len(train) == 3 and len(aug) == 3 and len(val) == 3
    assert not set(train) & set(aug) and not set(val) & (set(train) | set(aug))
    voc_label = voc / "SegmentationClass" / f"{train[0]}.png"
    assert Image.open(voc_label).mode == "P"  # palette PNG, as VOC ships it
    assert 255 in values(voc_label)  # the void outline
    assert values(voc_label) <= set(range(len(CLASS_NAMES) + 1)) | {255}
    sbd_label = voc / "SegmentationClassAug" / f"{aug[0]}.png"
    assert Image.open(sbd_label).mode == "L"
    assert values(sbd_label) <= set(range(len(CLASS_NAMES) + 1))
    assert not (voc / "SegmentationClass" / f"{aug[0]}.png").exists()
    image = Image.open(voc / "JPEGImages" / f"{val[0]}.jpg")
    assert image.format == "JPEG" and image.size == (48, 48)
    print(check_dataset("voc12aug", tmp_path))


def test_cityscapes_layout_and_train_ids(tmp_path):
    city = write_cityscapes(tmp_path, num_train=4, num_val=2, size=32, seed=0)
    images = sorted((city / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    assert len(images) == 4 and len({p.parent.name for p in images}) == 2  # two cities
    label = city / "gtFine" / "train" / images[0].parent.name / images[0].name.replace(
        "_leftImg8bit.png", "_gtFine_labelTrainIds.png")
    assert Image.open(images[0]).size == (64, 32) and Image.open(label).size == (64, 32)
    assert values(label) <= {0} | set(range(11, 11 + len(CLASS_NAMES)))
    print(check_dataset("cityscapes", tmp_path))


def test_ade20k_layout_and_zero_label(tmp_path):
    ade = write_ade20k(tmp_path, num_train=3, num_val=2, size=40, seed=0)
    assert sorted(p.name for p in (ade / "images" / "validation").iterdir()) == [
        "ADE_val_00000001.jpg", "ADE_val_00000002.jpg"]
    label = ade / "annotations" / "training" / "ADE_train_00000001.png"
    found = values(label)
    assert 0 in found and 1 in found  # 0 = the unlabelled outline, 1 = background
    assert found <= set(range(len(CLASS_NAMES) + 2))
    print(check_dataset("ade20k", tmp_path))


def test_labels_follow_texture_not_grey_level(tmp_path):
    """Scenes are grey; within one class the grey levels vary, so only the texture identifies
    it; every class appears and a scene usually shows several."""
    voc = write_voc12aug(tmp_path, num_train=40, num_val=1, size=64, seed=3)
    levels, per_image = {}, []
    for label_path in (voc / "SegmentationClassAug").glob("*.png"):
        label = np.asarray(Image.open(label_path))
        image = np.asarray(Image.open(voc / "JPEGImages" / f"{label_path.stem}.jpg"), float)
        assert np.abs(image[..., 0] - image[..., 2]).mean() < 3  # grey (up to JPEG noise)
        present = set(np.unique(label).tolist()) - {0}
        per_image.append(len(present))
        for cls in present:
            levels.setdefault(cls, []).append(image[label == cls].mean())
    spread = [np.std(c) for c in levels.values() if len(c) > 3]
    assert spread and min(spread) > 10, "a class must not have a fixed grey level"
    assert sorted(levels) == list(range(1, len(CLASS_NAMES) + 1))
    assert np.mean(per_image) >= 2.5


def test_image_folder_train_and_val_by_largest_object(tmp_path):
    train = write_image_folder(tmp_path / "imagenet", num_images=12, size=48, seed=0,
                               num_val=6)
    assert train == tmp_path / "imagenet" / "train"
    for split, count in (("train", 12), ("val", 6)):
        files = sorted((tmp_path / "imagenet" / split).glob("*/*.jpg"))
        assert len(files) == count
        assert {f.parent.name for f in files} <= set(CLASS_NAMES)
    rng = np.random.default_rng([0, 0])  # the train stream: the first scene's folder
    _, objects = render_scene(rng, 48, 48)
    first = next((tmp_path / "imagenet" / "train").glob("*/scene_000000.jpg"))
    assert first.parent.name == CLASS_NAMES[image_class(objects)]


def test_writers_are_deterministic(tmp_path):
    a = write_ade20k(tmp_path / "a", 2, 1, 32, seed=7)
    b = write_ade20k(tmp_path / "b", 2, 1, 32, seed=7)
    for path in a.rglob("*.png"):
        assert (b / path.relative_to(a)).read_bytes() == path.read_bytes()


def test_writers_reject_unusable_sizes(tmp_path):
    with pytest.raises(ValueError, match="at least 2 training"):
        write_voc12aug(tmp_path, 1, 1)
    with pytest.raises(ValueError, match="at least 32"):
        write_cityscapes(tmp_path, 4, 2, size=16)


def test_cli_writes_every_format(tmp_path):
    formats = "voc,cityscapes,ade20k,imagefolder,coco,voc_det"
    result = subprocess.run([sys.executable, "tools/make_synthetic_data.py", "--root",
                             str(tmp_path), "--formats", formats, "--num-train", "4",
                             "--num-val", "2", "--size", "48"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for kind in formats.split(","):
        assert f"{kind}: " in result.stdout
    for sub in ("VOCdevkit/VOC2012", "cityscapes", "ade/ADEChallengeData2016", "imagenet/train",
                "imagenet/val", "coco"):
        assert (tmp_path / sub).is_dir(), sub


def test_cli_rejects_an_unknown_format(tmp_path):
    result = subprocess.run([sys.executable, "tools/make_synthetic_data.py", "--root",
                             str(tmp_path), "--formats", "voc,kitti"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "kitti" in result.stderr
