"""Bad datasets (docs/reliability.md, "Datasets"): a clear error naming the file, or, where
skipping is the documented behaviour (unreadable pretraining images), counted and reported;
never a silent wrong number."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data import FileListDataset, ImageFolderDataset, build_dataset
from pretrain.pipeline import build_pipeline
from pretrain.transforms import MultiCropAugmentation
from transfer.detectron2_side.annotations import check_coco_annotations
from transfer.mmseg_side.layouts import DatasetLayoutError, check_dataset
from transfer.synthetic.image_folder import write_image_folder
from transfer.synthetic.segmentation import write_cityscapes, write_voc12aug
from transfer import extras  # noqa: E402

BAD_IMAGES = ("truncated_jpeg", "zero_bytes", "text_as_jpg")


def write_bad_image(kind: str, good: str, out) -> str:
    data = open(good, "rb").read()
    if kind == "truncated_jpeg":
        out.write_bytes(data[: len(data) // 2])
    elif kind == "zero_bytes":
        out.write_bytes(b"")
    else:
        out.write_text("this is not an image\n")
    return str(out)


@pytest.fixture
def folder(tmp_path):
    write_image_folder(tmp_path / "imagenet", num_images=6, size=48, seed=0)
    return tmp_path / "imagenet"


# ---- pretraining data (pretrain/data.py) ----------------------------------------------------
@pytest.mark.parametrize("pipeline", ["pil", "fast"])
@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_unreadable_image_is_skipped_counted_and_named(kind, pipeline, folder, caplog):
    class_dir = sorted(p for p in (folder / "train").iterdir())[0]
    good = str(sorted(class_dir.glob("*.jpg"))[0])
    bad = write_bad_image(kind, good, class_dir / "aaa_bad.jpg")  # sorts first in its class
    base = ImageFolderDataset(folder)
    index = base.paths.index(bad)
    augmentation = MultiCropAugmentation(size_crops=(64, 32), num_crops=(2, 2), grid_sizes=(2, 1))
    dataset, collate, _ = build_pipeline(pipeline, base, augmentation, 0, torch.device("cpu"),
                                         False)
    sample = dataset[index]
    assert sample["skipped"] == [bad]  # reported to the loop, which counts it
    assert collate([sample, dataset[(index + 1) % len(base)]])["skipped"] == [bad]
    assert bad in caplog.text  # and logged with its path


def test_empty_class_folder_names_the_class_and_root(folder):
    (folder / "train" / "zz_empty_class").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        ImageFolderDataset(folder)
    assert "zz_empty_class" in str(info.value) and str(folder / "train") in str(info.value)


def test_wrong_root_and_root_without_images(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"image folder {tmp_path / 'nowhere'} does not "
                                                "exist; expected root/<class>/<image>"):
        build_dataset("imagefolder", root=tmp_path / "nowhere")
    (tmp_path / "no_images" / "class_a").mkdir(parents=True)
    (tmp_path / "no_images" / "class_a" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="class_a"):
        build_dataset("imagefolder", root=tmp_path / "no_images")
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match=f"image folder {tmp_path / 'flat'}"):
        build_dataset("imagefolder", root=tmp_path / "flat")


def test_file_list_naming_a_missing_file(folder, tmp_path):
    images = sorted(str(p) for p in (folder / "train").rglob("*.jpg"))
    first_missing = tmp_path / "first.txt"
    first_missing.write_text("\n".join([str(tmp_path / "gone.jpg")] + images) + "\n")
    with pytest.raises(FileNotFoundError, match=f"first image {tmp_path / 'gone.jpg'} does not"):
        FileListDataset(first_missing)
    # a later missing file is read like any unreadable image: skipped, counted and named
    later = tmp_path / "later.txt"
    later.write_text("\n".join(images + [str(tmp_path / "gone.jpg")]) + "\n")
    base = FileListDataset(later)
    augmentation = MultiCropAugmentation(size_crops=(64, 32), num_crops=(2, 2), grid_sizes=(2, 1))
    dataset, _, _ = build_pipeline("pil", base, augmentation, 0, torch.device("cpu"), False)
    assert dataset[len(base) - 1]["skipped"] == [str(tmp_path / "gone.jpg")]


@pytest.mark.slow
def test_the_engine_counts_unreadable_images_across_a_restart(folder, tmp_path):
    """metrics.jsonl's corrupt_images and the final log line count every skipped image; a
    resumed run carries the count on (it is saved with the checkpoint)."""
    from pretrain.config import load_config
    from pretrain.engine import train
    from pretrain.run_logging import read_jsonl

    class_dir = sorted(p for p in (folder / "train").iterdir())[0]
    write_bad_image("truncated_jpeg", str(sorted(class_dir.glob("*.jpg"))[0]),
                    class_dir / "aaa_bad.jpg")
    common = ["data.kind=imagefolder", f"data.root={folder}", "data.size_crops=[64,32]",
              "optim.batch_size=7", "optim.epochs=1", "optim.warmup_epochs=0",
              "model.mlp=64-64", "model.maps_mlp=32-32", "run.log_every_steps=1",
              "run.checkpoint_every_steps=1", "run.export_backbone=false"]
    smoke = "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(load_config(smoke, common + [f"run.output_dir={straight}"]))
    # 7 images, batch 7: one step sees the bad one exactly once
    assert read_jsonl(straight / "metrics.jsonl")[-1]["corrupt_images"] == 1
    # 2 epochs, stopped after the first and resumed: the count must reach 2, not restart
    two = ["optim.epochs=2", f"run.output_dir={split}"]
    train(load_config(smoke, common + two + ["optim.max_steps=1"]))
    train(load_config(smoke, common + two))
    assert [r["corrupt_images"] for r in read_jsonl(split / "metrics.jsonl")] == [1, 2]


# ---- segmentation layouts (transfer/mmseg_side/layouts.py) ----------------------------------
def test_voc_without_segmentation_class_aug(tmp_path):
    voc = write_voc12aug(tmp_path, num_train=4, num_val=2)
    for path in (voc / "SegmentationClassAug").iterdir():
        path.unlink()
    (voc / "SegmentationClassAug").rmdir()
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset("voc12aug", tmp_path)
    assert "SegmentationClassAug is absent or empty: build it from SBD" in str(info.value)
    assert str(voc / "SegmentationClassAug") in str(info.value)


def _edit_label(path, edit) -> None:
    with Image.open(path) as im:
        mode, palette, array = im.mode, im.getpalette(), np.asarray(im).copy()
    out = Image.fromarray(edit(array).astype(np.uint8), mode="L")
    if mode == "P":
        out = out.convert("P")
        out.putpalette(palette)
    out.save(path)


def test_voc_mask_of_another_size(tmp_path):
    voc = write_voc12aug(tmp_path, num_train=4, num_val=2)
    label = sorted((voc / "SegmentationClass").glob("*.png"))[0]
    _edit_label(label, lambda a: a[:32, :40])
    with pytest.raises(DatasetLayoutError, match=f"{label}: size \\(40, 32\\) differs from its "
                                                 "image"):
        check_dataset("voc12aug", tmp_path)


def test_voc_label_value_outside_the_classes(tmp_path):
    voc = write_voc12aug(tmp_path, num_train=4, num_val=2)
    label = sorted((voc / "SegmentationClass").glob("*.png"))[0]
    _edit_label(label, lambda a: np.where(a == 0, 30, a))
    with pytest.raises(DatasetLayoutError, match=f"{label}: label values \\[30\\] outside"):
        check_dataset("voc12aug", tmp_path)


def test_cityscapes_missing_a_gtfine_file(tmp_path):
    city = write_cityscapes(tmp_path, num_train=3, num_val=2)
    gone = sorted((city / "gtFine" / "train").rglob("*_labelTrainIds.png"))[-1]
    gone.unlink()
    with pytest.raises(DatasetLayoutError) as info:
        check_dataset("cityscapes", tmp_path)
    assert "1 of 3 train labelTrainIds maps missing" in str(info.value) and str(gone) in str(
        info.value)


@pytest.mark.mmseg
def test_evaluation_refuses_labels_outside_the_classes():
    """The layout check opens 4 label maps per split; every map evaluated is checked by the
    metric, so an unknown value beyond the sample cannot shrink the unions silently."""
    pytest.importorskip("mmseg.models", reason="needs the MMSegmentation environment")
    from transfer.mmseg_side.metric import PerClassIoUMetric

    metric = PerClassIoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": ("a", "b", "c")}
    good = torch.tensor([[[0, 1], [2, 255]]])
    sample = {"pred_sem_seg": {"data": good.clone()}, "gt_sem_seg": {"data": good.clone()},
              "seg_map_path": "ok.png"}
    metric.process([], [sample])
    bad = {"pred_sem_seg": {"data": good.clone()},
           "gt_sem_seg": {"data": torch.tensor([[[0, 7], [2, 255]]])},
           "seg_map_path": "data/bad_label.png"}
    with pytest.raises(ValueError, match="data/bad_label.png: 1 pixels with label values \\[7\\] "
                                         "outside the 3 classes"):
        metric.process([], [bad])
    assert len(metric.results) == 1  # the bad map was not counted


# ---- COCO annotations (transfer/detectron2_side) --------------------------------------------
@pytest.mark.parametrize("content, expected", [
    ('{"images": [], "annotations": [', "does not parse as JSON"),
    ("", "does not parse as JSON"),
    ("\x89PNG not json", "does not parse as JSON"),
    ("[1, 2]", "is JSON but not COCO instances annotations"),
    ('{"images": [], "annotations": []}', "expected the lists images, annotations, categories"),
])
def test_coco_annotation_file_that_does_not_parse(content, expected, tmp_path):
    path = tmp_path / "instances_train2017.json"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        check_coco_annotations(path, "coco_2017_train")
    assert f"dataset coco_2017_train: {path}" in str(info.value) and expected in str(info.value)
    path.write_text(json.dumps({"images": [{}], "annotations": [], "categories": []}))
    assert check_coco_annotations(path, "x") == {"images": 1, "annotations": 0, "categories": 0}


@pytest.mark.detectron2
def test_registration_parses_the_coco_file(tmp_path):
    pytest.importorskip("detectron2", reason=extras.missing_reason("detectron2"))
    from transfer.detectron2_side.data import register_dataset

    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "coco" / "annotations").mkdir()
    (tmp_path / "coco" / "annotations" / "instances_train2017.json").write_text('{"images": [')
    with pytest.raises(ValueError, match="dataset coco_2017_train: .* does not parse as JSON"):
        register_dataset(tmp_path, "coco_2017_train")
