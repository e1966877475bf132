"""Dataset layout checks and the preparation tools: bad layouts get errors that name the
file, the expected path and the counts; the tools run mmseg's and cityscapesscripts' own
converters on small inputs in the real release formats."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transfer.mmseg_side.layouts import DatasetLayoutError, check_dataset
from transfer.synthetic.segmentation import write_ade20k, write_cityscapes, write_voc12aug

ROOT = Path(__file__).resolve().parent.parent


def prepare(tool: str, *args):
    return subprocess.run([sys.executable, f"tools/prepare/{tool}.py", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True)


def test_empty_root_names_the_missing_folders(tmp_path):
    with pytest.raises(DatasetLayoutError, match="missing folder .*VOCdevkit/VOC2012"):
        check_dataset("voc12aug", tmp_path)
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset("cityscapes", tmp_path)
    assert f"missing folder {tmp_path}/cityscapes/leftImg8bit/train" in str(info.value)
    assert f"missing folder {tmp_path}/cityscapes/leftImg8bit/val" in str(info.value)


def test_missing_label_names_the_expected_path_and_count(tmp_path):
    voc = write_voc12aug(tmp_path, 6, 3, 32)
    val_id = (voc / "ImageSets/Segmentation/val.txt").read_text().split()[1]
    (voc / "SegmentationClass" / f"{val_id}.png").unlink()
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset("voc12aug", tmp_path)
    message = str(info.value)
    assert "1 of 3 label maps for val.txt in SegmentationClass missing" in message
    assert str(voc / "SegmentationClass" / f"{val_id}.png") in message


def test_missing_sbd_labels_point_to_the_preparation_tool(tmp_path):
    voc = write_voc12aug(tmp_path, 6, 3, 32)
    shutil.rmtree(voc / "SegmentationClassAug")
    with pytest.raises(DatasetLayoutError, match="tools/prepare/voc_aug.py"):
        check_dataset("voc12aug", tmp_path)


def test_colour_label_maps_are_malformed(tmp_path):
    ade = write_ade20k(tmp_path, 3, 2, 32)
    label = ade / "annotations" / "training" / "ADE_train_00000001.png"
    Image.open(label).convert("RGB").save(label)
    with pytest.raises(DatasetLayoutError, match=f"{label}: PNG mode 'RGB', expected L"):
        check_dataset("ade20k", tmp_path)


def test_out_of_range_values_and_wrong_sizes(tmp_path):
    city = write_cityscapes(tmp_path, 2, 2, 32)
    labels = sorted((city / "gtFine" / "val").glob("*/*_labelTrainIds.png"))
    Image.fromarray(np.full((32, 64), 33, np.uint8)).save(labels[0])  # a label id, not train id
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(labels[1])
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset("cityscapes", tmp_path)
    assert f"{labels[0]}: label values [33] outside" in str(info.value)
    assert f"{labels[1]}: size (16, 16) differs from its image" in str(info.value)


def test_full_release_counts_are_enforced_on_request(tmp_path):
    write_ade20k(tmp_path, 3, 2, 32)
    with pytest.raises(DatasetLayoutError, match="'training' has 3 images, the released dataset "
                                                 "has 20210"):
        check_dataset("ade20k", tmp_path, full=True)


def fake_sbd(voc: Path, sbd: Path) -> dict[str, np.ndarray]:
    """SBD's release format: dataset/cls/<id>.mat holding GTcls.Segmentation, and lists."""
    from scipy.io import savemat

    labels = {p.stem: np.asarray(Image.open(p)) for p in (voc / "SegmentationClassAug").glob("*")}
    shutil.rmtree(voc / "SegmentationClassAug")
    (voc / "ImageSets/Segmentation/aug.txt").unlink()
    (sbd / "dataset" / "cls").mkdir(parents=True)
    for name, label in labels.items():
        savemat(sbd / "dataset" / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": label}})
    names = sorted(labels)
    (sbd / "dataset" / "train.txt").write_text("".join(f"{n}\n" for n in names[:-2]))
    (sbd / "dataset" / "val.txt").write_text("".join(f"{n}\n" for n in names[-2:]))
    return labels


def test_voc_aug_preparation_builds_segmentation_class_aug(tmp_path):
    voc = write_voc12aug(tmp_path, 6, 2, 32)
    labels = fake_sbd(voc, tmp_path / "benchmark_RELEASE")
    result = prepare("voc_aug", "--data-root", tmp_path, "--sbd", tmp_path / "benchmark_RELEASE")
    assert result.returncode != 0 and "the released VOC aug has 10582" in result.stderr
    assert "nothing written" in result.stderr and not (voc / "SegmentationClassAug").exists()
    result = prepare("voc_aug", "--data-root", tmp_path, "--sbd", tmp_path / "benchmark_RELEASE",
                     "--allow-partial")
    assert result.returncode == 0, result.stderr
    assert "layout OK" in result.stdout
    for name, label in labels.items():
        assert np.array_equal(np.asarray(Image.open(voc / "SegmentationClassAug" /
                                                    f"{name}.png")), label)
    train = set((voc / "ImageSets/Segmentation/train.txt").read_text().split())
    aug = set((voc / "ImageSets/Segmentation/aug.txt").read_text().split())
    assert aug == set(labels) - train  # SBD minus VOC train and val (mmseg's rule)


def test_voc_aug_preparation_names_missing_sbd_files(tmp_path):
    voc = write_voc12aug(tmp_path, 6, 2, 32)
    fake_sbd(voc, tmp_path / "sbd")
    missing = sorted((tmp_path / "sbd" / "dataset" / "cls").glob("*.mat"))[0]
    missing.unlink()
    result = prepare("voc_aug", "--data-root", tmp_path, "--sbd", tmp_path / "sbd",
                     "--allow-partial")
    assert result.returncode != 0
    assert "1 of 6 SBD label files (dataset/cls/<id>.mat) missing" in result.stderr
    assert str(missing) in result.stderr


def polygon_json(path: Path) -> None:
    objects = [{"label": "road", "polygon": [[0, 0], [64, 0], [64, 32], [0, 32]]},
               {"label": "car", "polygon": [[10, 10], [30, 10], [30, 20], [10, 20]]}]
    path.write_text(json.dumps({"imgHeight": 32, "imgWidth": 64, "objects": objects}))


def test_cityscapes_preparation_renders_train_ids(tmp_path):
    city = tmp_path / "cityscapes"
    for split in ("train", "val"):
        (city / "leftImg8bit" / split / "aachen").mkdir(parents=True)
        (city / "gtFine" / split / "aachen").mkdir(parents=True)
        for i in range(2):
            stem = f"aachen_{i:06d}_000019"
            Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(
                city / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png")
            polygon_json(city / "gtFine" / split / "aachen" / f"{stem}_gtFine_polygons.json")
    missing = city / "gtFine" / "val" / "aachen" / "aachen_000001_000019_gtFine_polygons.json"
    missing.unlink()
    result = prepare("cityscapes", "--data-root", tmp_path, "--allow-partial")
    assert result.returncode != 0
    assert "1 of 2 val polygon files" in result.stderr and str(missing) in result.stderr
    polygon_json(missing)
    result = prepare("cityscapes", "--data-root", tmp_path, "--allow-partial")
    assert result.returncode == 0, result.stderr
    label = np.asarray(Image.open(
        city / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"))
    assert label[0, 0] == 0 and label[15, 20] == 13  # road, car (Cityscapes train ids)
    assert (city / "val.txt").read_text().split() == ["aachen/aachen_000000_000019",
                                                      "aachen/aachen_000001_000019"]


def test_ade20k_preparation_unpacks_and_checks(tmp_path):
    write_ade20k(tmp_path / "src", 3, 2, 32)
    archive = tmp_path / "ADEChallengeData2016.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (tmp_path / "src" / "ade").rglob("*"):
            zf.write(path, path.relative_to(tmp_path / "src" / "ade"))
    data = tmp_path / "data"
    result = prepare("ade20k", "--data-root", data, "--zip", archive, "--allow-partial")
    assert result.returncode == 0, result.stderr
    assert "training 3, validation 2 images, layout OK" in result.stdout
    result = prepare("ade20k", "--data-root", data)  # the release sizes are expected
    assert result.returncode != 0 and "has 20210" in result.stderr
    with zipfile.ZipFile(tmp_path / "wrong.zip", "w") as zf:
        zf.writestr("images/x.jpg", b"")
    result = prepare("ade20k", "--data-root", data, "--zip", tmp_path / "wrong.zip")
    assert result.returncode != 0 and "expected one top folder ADEChallengeData2016/" in \
        result.stderr
