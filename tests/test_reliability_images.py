"""The fast image path has the PIL path's guards, and the ImageFolder scan lists each real file
once (docs/reliability.md, "Datasets").

Images are written byte by byte (``png``): a 16-bit PNG, and a valid PNG of zeros that declares
more pixels than PIL's decompression-bomb limit but is small on disk (zeros compress 1000:1).
"""
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data import FileListDataset, ImageFolderDataset
from pretrain.pipeline import build_pipeline
from pretrain.transforms import MultiCropAugmentation
from transfer.synthetic.image_folder import write_image_folder

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml"
PIPELINES = ("pil", "fast")


def png(path: Path, width: int, height: int, depth: int, color: int, rows) -> Path:
    """A PNG of ``rows`` (bytes of one row each, without the filter byte)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    stream = zlib.compressobj(9)
    data = b"".join(stream.compress(b"\0" + row) for row in rows) + stream.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))
    return path


def png16_rgb(path: Path, size: int = 40) -> Path:
    """A 16-bit RGB PNG: a horizontal ramp over the whole 16-bit range."""
    ramp = np.linspace(0, 65535, size).astype(">u2")
    row = np.repeat(ramp[:, None], 3, axis=1).tobytes()
    return png(path, size, size, 16, 2, [row] * size)


def png16_gray(path: Path, size: int = 40) -> Path:
    return png(path, size, size, 16, 0, [np.full(size, 40000, ">u2").tobytes()] * size)


# 1-bit grayscale zeros, 13,400 x 13,400 = 179.56 M pixels: over PIL's limit (2 x
# Image.MAX_IMAGE_PIXELS = 178.96 M); 30 kB on disk, 539 MB once decoded to RGB
BOMB_SIDE = 13_400


def bomb(path: Path) -> Path:
    row = bytes((BOMB_SIDE + 7) // 8)
    return png(path, BOMB_SIDE, BOMB_SIDE, 1, 0, (row for _ in range(BOMB_SIDE)))


@pytest.fixture
def folder(tmp_path):
    write_image_folder(tmp_path / "imagenet", num_images=6, size=48, seed=0)
    return tmp_path / "imagenet"


def class_dir(folder: Path) -> Path:
    return sorted((folder / "train").iterdir())[0]


def pipeline_of(kind: str, base):
    augmentation = MultiCropAugmentation(size_crops=(64, 32), num_crops=(2, 2), grid_sizes=(2, 1))
    return build_pipeline(kind, base, augmentation, 0, torch.device("cpu"), False)


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("kind", ["rgb16", "gray16", "animated_gif"])
def test_16_bit_pngs_and_animated_gifs_are_read_by_both_pipelines(kind, pipeline, folder):
    """The fast path used to hand a uint16 (or a frames x 3 x H x W) tensor to the crop, which
    raised a TypeError without the file's name: the run died at its first step."""
    target = class_dir(folder) / {"rgb16": "aaa.png", "gray16": "aaa.png",
                                  "animated_gif": "aaa.gif"}[kind]
    if kind == "rgb16":
        png16_rgb(target)
    elif kind == "gray16":
        png16_gray(target)
    else:
        frames = [Image.new("RGB", (40, 30), color) for color in ((200, 0, 0), (0, 200, 0))]
        frames[0].save(target, save_all=True, append_images=frames[1:])
    base = ImageFolderDataset(folder)
    if kind == "animated_gif":  # not an ImageFolder extension: through a file list
        (folder / "list.txt").write_text("".join(f"{p}\n" for p in [target, *base.paths]))
        base = FileListDataset(folder / "list.txt")
    dataset, collate, _ = pipeline_of(pipeline, base)
    sample = dataset[base.paths.index(str(target))]
    assert sample["skipped"] == []
    assert [tuple(v.shape) for v in sample["views"]] == [(3, 64, 64)] * 2 + [(3, 32, 32)] * 2
    if pipeline == "fast":
        from pretrain.fast_augment import decode_file

        image = decode_file(str(target))
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        if kind == "rgb16":  # the high byte, as PIL reads a 16-bit RGB PNG
            pil = torch.from_numpy(np.asarray(Image.open(target).convert("RGB")).copy())
            assert torch.equal(image.permute(1, 2, 0), pil)
        if kind == "animated_gif":  # the first frame, as PIL
            assert image[0].float().mean() > 150 and image[1].float().mean() < 50


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_an_image_declaring_too_many_pixels_is_skipped_counted_and_named(pipeline, folder,
                                                                         caplog):
    """The fast path decoded it (539 MB here; gigabytes for larger declared sizes); the PIL
    path refuses it from its header. Both now skip it as an unreadable image, named."""
    target = bomb(class_dir(folder) / "aaa_bomb.png")
    assert target.stat().st_size < 100_000
    base = ImageFolderDataset(folder)
    dataset, collate, _ = pipeline_of(pipeline, base)
    sample = dataset[base.paths.index(str(target))]
    assert sample["skipped"] == [str(target)]
    assert str(target) in caplog.text and "exceeds limit" in caplog.text


@pytest.mark.slow
def test_a_fast_pipeline_run_over_16_bit_and_oversized_pngs_trains_and_counts(tmp_path):
    """End to end (data.pipeline=fast): the 16-bit PNG trains, the oversized one is skipped,
    named in the log and counted in metrics.jsonl; 16 images, two steps of 8."""
    from pretrain.config import load_config
    from pretrain.engine import train

    write_image_folder(tmp_path / "imagenet", num_images=14, size=48, seed=0)
    first = class_dir(tmp_path / "imagenet")
    png16_rgb(first / "aaa_16bit.png")
    target = bomb(first / "aab_bomb.png")
    cfg = load_config(SMOKE, [
        "data.kind=imagefolder", "data.root=imagenet", "data.pipeline=fast",
        "optim.batch_size=8", "optim.epochs=1", "optim.warmup_epochs=0", "model.mlp=64-64",
        "model.maps_mlp=32-32", "run.log_every_steps=1", "run.probe=false",
        f"run.output_dir={tmp_path / 'run'}"])
    train(cfg, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text()
               .splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert records[-1]["corrupt_images"] == 1
    state = torch.load(tmp_path / "run/checkpoint.pth", weights_only=True)
    assert state["corrupt"] == [str(target)]


# ---- the ImageFolder scan and symbolic links -------------------------------------------------
def test_symbolic_links_list_each_real_file_once_under_its_own_class(folder, caplog):
    """A link to the folder itself made os.walk list a class's images again at each of 40
    levels; a link to another class's folder or file listed its images under the wrong
    class too."""
    plain = ImageFolderDataset(folder)
    expected = dict(zip(plain.paths, plain.labels))
    a, b = sorted((folder / "train").iterdir())[:2]
    os.symlink(".", a / "self")
    os.symlink(b, a / "other_class")
    os.symlink(next(b.glob("*.jpg")), a / "copy_of_b.jpg")
    scanned = ImageFolderDataset(folder)
    assert dict(zip(scanned.paths, scanned.labels)) == expected
    assert scanned.paths == plain.paths  # the same order as before: same indices, same run
    assert "reached more than once through symbolic links are listed once" in caplog.text


def test_a_scan_with_two_link_loops_ends(folder):
    """Two links back up (2^40 paths for os.walk(followlinks=True)) hung the scan."""
    a = sorted((folder / "train").iterdir())[0]
    os.symlink(".", a / "loop1")
    (a / "sub").mkdir()
    os.symlink("..", a / "sub" / "loop2")
    code = ("import sys\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "from pretrain.data import ImageFolderDataset\n"
            "print(len(ImageFolderDataset(sys.argv[1])))\n")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                             text=True, timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        pytest.fail("the scan did not end within 60 s")
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) == 6


def test_the_global_evaluation_scans_its_image_folders_the_same_way(folder):
    """tools/cls_eval.py reads torchvision ImageFolders: the same scan, each file once."""
    from torchvision import datasets

    from transfer.evaluation.classification import ImageFolderOnce

    plain = datasets.ImageFolder(str(folder / "train"))
    os.symlink(".", sorted((folder / "train").iterdir())[0] / "self")
    assert ImageFolderOnce(str(folder / "train")).samples == plain.samples
