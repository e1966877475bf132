"""Pretraining datasets and the multi-crop wrapper (pretrain/data.py)."""
import logging
import shutil

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pretrain.data import (FileListDataset, ImageFolderDataset, MultiCropDataset,
                           SyntheticDataset, UnreadableImageError, build_dataset,
                           collate_multicrop)
from pretrain.sampler import ResumableDistributedSampler
from pretrain.synthetic import CLASS_NAMES, NUM_CLASSES
from pretrain.transforms import MultiCropAugmentation
from transfer.synthetic.image_folder import write_image_folder
from conftest import THREADS  # noqa: E402

torch.set_num_threads(THREADS)


def small_augmentation() -> MultiCropAugmentation:
    """2 x 64 px + 2 x 32 px crops; grids 2 and 1 (ResNet/ConvNeXt at these sizes)."""
    return MultiCropAugmentation(size_crops=(64, 32), num_crops=(2, 2), grid_sizes=(2, 1))


@pytest.fixture
def image_folder(tmp_path):
    """``tmp/imagenet/train/<class>/*.jpg`` with 6 scenes; returns the ``imagenet`` root."""
    write_image_folder(tmp_path / "imagenet", num_images=6, size=48, seed=0)
    return tmp_path / "imagenet"


def add_corrupt_images(folder):
    """A truncated JPEG and a text file named .jpg, in the first class folder."""
    class_dir = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    good = sorted(class_dir.glob("*.jpg"))[0]
    truncated = class_dir / "scene_truncated.jpg"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = class_dir / "scene_text.jpg"
    text.write_text("this is not an image\n")
    return {str(truncated), str(text)}


def test_image_folder_accepts_train_or_its_parent(image_folder):
    parent = ImageFolderDataset(image_folder)
    train = ImageFolderDataset(image_folder / "train")
    assert len(parent) == len(train) == 6 and parent.paths == train.paths
    img, label, path = parent[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (48, 48)
    # label indexes the sorted class folders, the folder being the scene's largest object
    assert parent.classes == sorted(parent.classes) and set(parent.classes) <= set(CLASS_NAMES)
    assert parent.num_classes == len(parent.classes)
    for index in range(len(parent)):
        _, label, path = parent[index]
        assert path.split("/")[-2] == parent.classes[label]


def test_image_folder_wrong_root_names_the_path(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError, match="no_such_dir.*root/<class>/<image>"):
        ImageFolderDataset(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*root/<class>/<image>"):
        ImageFolderDataset(empty)
    (empty / "some_class").mkdir()
    (empty / "some_class" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="empty.*root/<class>/<image>"):
        ImageFolderDataset(empty)


def test_corrupt_images_are_reported_counted_and_replaced(image_folder, caplog):
    corrupt = add_corrupt_images(image_folder / "train")
    base = ImageFolderDataset(image_folder)
    assert len(base) == 8
    bad_indices = [i for i, p in enumerate(base.paths) if p in corrupt]
    for i in bad_indices:
        with pytest.raises(UnreadableImageError, match=base.paths[i]):
            base[i]
    dataset = MultiCropDataset(base, small_augmentation(), seed=0)
    with caplog.at_level(logging.WARNING, logger="pretrain.data"):
        samples = [dataset[i] for i in range(len(dataset))]
    skipped = [p for s in samples for p in s["skipped"]]
    assert set(skipped) == corrupt
    for path in corrupt:  # each reported with its path and PIL's error
        assert any(path in r.getMessage() for r in caplog.records)
    for i in bad_indices:  # replaced by the next readable image, with that image's label
        good = next(j % len(base) for j in range(i + 1, i + len(base))
                    if base.paths[j % len(base)] not in corrupt)
        assert samples[i]["label"] == base.labels[good]
        assert len(samples[i]["views"]) == 4
    batch = collate_multicrop(samples)
    assert sorted(batch["skipped"]) == sorted(skipped)


def test_too_many_consecutive_failures_raise_naming_the_paths(tmp_path):
    folder = tmp_path / "train" / "broken"
    folder.mkdir(parents=True)
    for i in range(4):
        (folder / f"bad_{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    dataset = MultiCropDataset(ImageFolderDataset(tmp_path), small_augmentation(),
                               max_consecutive_failures=3)
    with pytest.raises(RuntimeError, match="3 consecutive unreadable") as info:
        dataset[1]
    for i in (1, 2, 3):
        assert f"bad_{i}.jpg" in str(info.value)


def test_file_list_relative_paths_and_labels(image_folder, tmp_path):
    images = sorted((image_folder / "train").rglob("*.jpg"))
    spaced = tmp_path / "with space.jpg"
    shutil.copy(images[0], spaced)
    lists = tmp_path / "lists"
    lists.mkdir()
    rel = images[1].relative_to(tmp_path)
    (lists / "train.txt").write_text(
        "# comment line\n"
        f"../{rel} 3\n"
        "\n"
        f"{images[2]}\n"  # absolute, no label
        f"../with space.jpg 5\n")
    dataset = FileListDataset(lists / "train.txt")
    assert len(dataset) == 3 and dataset.labels == [3, -1, 5] and dataset.num_classes == 6
    img, label, path = dataset[0]
    assert img.mode == "RGB" and label == 3 and path.endswith(str(rel))
    assert dataset[1][2] == str(images[2]) and dataset[2][2].endswith("with space.jpg")

    # relative to an explicit root instead of the list's folder
    (lists / "rooted.txt").write_text(f"{rel} 1\n")
    assert FileListDataset(lists / "rooted.txt", root=tmp_path)[0][1] == 1
    with pytest.raises(FileNotFoundError, match=f"first image .*{rel}.*list's folder"):
        FileListDataset(lists / "rooted.txt")


def test_file_list_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt.*one image path per line"):
        FileListDataset(tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="blank.txt lists no image"):
        FileListDataset(tmp_path / "blank.txt")
    (tmp_path / "negative.txt").write_text("a.jpg 1\nb.jpg -4\n")
    with pytest.raises(ValueError, match="negative.txt, line 2: label -4"):
        FileListDataset(tmp_path / "negative.txt")
    (tmp_path / "unlabelled.txt").write_text("a.jpg\n")
    (tmp_path / "a.jpg").write_bytes(b"")
    assert FileListDataset(tmp_path / "unlabelled.txt").num_classes is None


def test_synthetic_dataset_is_deterministic():
    a, b = SyntheticDataset(5, 64, seed=1), SyntheticDataset(5, 64, seed=1)
    img, label, path = a[2]
    assert img.size == (64, 64) and 0 <= label < NUM_CLASSES and path == "synthetic://seed1/2"
    assert a.num_classes == NUM_CLASSES
    assert img.tobytes() == b[2][0].tobytes()
    assert img.tobytes() != SyntheticDataset(5, 64, seed=2)[2][0].tobytes()
    with pytest.raises(IndexError):
        a[5]


def test_build_dataset_kinds(image_folder, tmp_path):
    assert len(build_dataset("imagefolder", root=image_folder)) == 6
    image = next((image_folder / "train").rglob("*.jpg"))
    (tmp_path / "list.txt").write_text(f"{image} 2\n")
    assert build_dataset("filelist", list_file=tmp_path / "list.txt")[0][1] == 2
    assert len(build_dataset("synthetic", num_images=7, size=32, seed=0)) == 7
    with pytest.raises(ValueError, match="needs root"):
        build_dataset("imagefolder")
    with pytest.raises(ValueError, match="needs list_file"):
        build_dataset("filelist")
    with pytest.raises(ValueError, match="unknown dataset kind 'imagenet'"):
        build_dataset("imagenet")


def test_index_encodes_epoch():
    dataset = MultiCropDataset(SyntheticDataset(4, 64, seed=0), small_augmentation(), seed=0)
    first, again, next_epoch = dataset[1], dataset[1], dataset[1 + len(dataset)]
    assert first["label"] == next_epoch["label"]
    assert all(torch.equal(x, y) for x, y in zip(first["views"], again["views"]))
    assert not any(torch.equal(x, y) for x, y in zip(first["views"], next_epoch["views"]))
    other_seed = MultiCropDataset(dataset.base, small_augmentation(), seed=1)[1]
    assert not any(torch.equal(x, y) for x, y in zip(first["views"], other_seed["views"]))


def test_collate_and_worker_count_independence():
    """Same (seed, epoch, index) -> identical batches with 0 and 2 DataLoader workers."""
    dataset = MultiCropDataset(SyntheticDataset(8, 64, seed=0), small_augmentation(), seed=5)
    sampler = ResumableDistributedSampler(len(dataset), batch_size=4, seed=0)
    sampler.set_epoch(1)  # indices 8..15: epoch 1

    def batches(workers):
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=workers,
                            collate_fn=collate_multicrop)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 2
    first = serial[0]
    assert [v.shape for v in first["views"]] == [(4, 3, 64, 64)] * 2 + [(4, 3, 32, 32)] * 2
    assert [g.shape for g in first["locations"]] == [(4, 2, 2, 2)] * 2 + [(4, 1, 1, 2)] * 2
    assert first["labels"].dtype == torch.long and first["labels"].shape == (4,)
    assert first["skipped"] == []
    for a, b in zip(serial, parallel):
        assert torch.equal(a["labels"], b["labels"])
        for x, y in zip(a["views"] + a["locations"], b["views"] + b["locations"]):
            assert torch.equal(x, y)
