"""The fast input pipeline (pretrain/fast_augment.py + pretrain/photometric.py): same crop
boxes, flips and photometric draws as the PIL pipeline, each batched operation equal to
torchvision's, the official probabilities, determinism per (seed, epoch, image)."""
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from pretrain.data import ImageFolderDataset, MultiCropDataset, SyntheticDataset, collate_multicrop
from pretrain.fast_augment import (BLUR_ON, FLIPPED, GRAYSCALE, IDENTITY, JITTER_ON, NUM_PARAMS,
                                   SOLARIZE, FastMultiCrop, FastMultiCropDataset, decode_file)
from pretrain.photometric import (BLUR_KERNEL, adjust_brightness, adjust_contrast, adjust_hue,
                                  adjust_saturation, apply_photometric, gaussian_blur)
from pretrain.pipeline import FastCollate, build_pipeline, photometric_views
from pretrain.transforms import MEAN, STD, MultiCropAugmentation
from transfer.synthetic.image_folder import write_image_folder
from conftest import THREADS  # noqa: E402

torch.set_num_threads(THREADS)
AUG = dict(size_crops=(64, 32), num_crops=(2, 4), min_scale_crops=(0.3, 0.08),
           max_scale_crops=(1.0, 0.3), grid_sizes=(2, 1))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("jpeg"), num_images=6, size=120, seed=0)


def normalised(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(-1, 3, 1, 1)) / torch.tensor(STD).view(-1, 3, 1, 1)


def test_same_boxes_flips_and_pixels_as_the_pil_pipeline(folder):
    base = ImageFolderDataset(folder)
    spec = MultiCropAugmentation(**AUG)
    pil = MultiCropDataset(base, spec, seed=7)
    fast = FastMultiCropDataset(base, FastMultiCrop(spec), seed=7)
    diffs = []
    for index in (0, 5, 6 + 2):  # 6 + 2: image 2 in epoch 1
        a, b = pil[index], fast[index]
        assert a["label"] == b["label"]
        for grid_a, grid_b in zip(a["locations"], b["locations"]):
            assert torch.equal(grid_a, grid_b)  # same boxes (and so the same grids)
        views = photometric_views(collate_multicrop([b])["views"], [p[None] for p in b["photometric"]],
                                  channels_last=False)
        for view_a, view_b in zip(a["views"], views):
            assert view_b.shape == (1, *view_a.shape) and view_b.dtype == torch.float32
            diffs.append(float((view_a - view_b[0]).abs().mean()))
    # same draws: float vs PIL's per-operation uint8 rounding, a different JPEG decoder and
    # blur kernel leave small differences (a wrong flip, box or factor gives ~0.5 or more)
    assert np.median(diffs) < 0.05 and max(diffs) < 0.1, diffs


def test_identity_parameters_only_normalise():
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    params = torch.tensor([IDENTITY] * 3)
    out = apply_photometric(images, params)
    torch.testing.assert_close(out, normalised(images.float() / 255))
    assert apply_photometric(images, params, channels_last=True).is_contiguous(
        memory_format=torch.channels_last)


def test_each_batched_operation_equals_torchvision_per_crop():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 24, 24, generator=g)
    x[0] = x[0, :1]  # a gray crop: hue undefined, must stay gray
    x[1, :, :4] = 0.0  # black pixels
    factors = torch.tensor([0.6, 0.9, 1.0, 1.2, 1.4])
    hues = torch.tensor([-0.5, -0.1, 0.0, 0.07, 0.5])
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0])
    for ours, theirs, f in [(adjust_brightness, TF.adjust_brightness, factors),
                            (adjust_contrast, TF.adjust_contrast, factors),
                            (adjust_saturation, TF.adjust_saturation, factors),
                            (adjust_hue, TF.adjust_hue, hues)]:
        expected = torch.stack([theirs(x[i], float(f[i])) for i in range(5)])
        torch.testing.assert_close(ours(x, f), expected, rtol=0, atol=2e-6, msg=ours.__name__)
    expected = torch.stack([TF.gaussian_blur(x[i], [BLUR_KERNEL] * 2, [float(sigmas[i])] * 2)
                            for i in range(5)])
    torch.testing.assert_close(gaussian_blur(x, sigmas), expected, rtol=0, atol=2e-6)


def test_apply_follows_each_crops_parameters():
    """Grayscale, solarize, blur and the jitter order per crop, against torchvision."""
    images = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    params = torch.tensor([IDENTITY] * 4)
    params[0, GRAYSCALE] = 1
    params[1, SOLARIZE] = 1
    params[2, BLUR_ON], params[2, 11] = 1, 1.3
    params[3, JITTER_ON] = 1
    params[3, 1:5] = torch.tensor([1.3, 0.7, 1.2, 0.05])
    params[3, 5:9] = torch.tensor([3.0, 1.0, 0.0, 2.0])  # hue, contrast, brightness, saturation
    x = images.float() / 255
    expected = [TF.rgb_to_grayscale(x[0], num_output_channels=3),
                TF.solarize(x[1], 128 / 255),
                TF.gaussian_blur(x[2], [BLUR_KERNEL] * 2, [1.3, 1.3]),
                TF.adjust_saturation(TF.adjust_brightness(TF.adjust_contrast(
                    TF.adjust_hue(x[3], 0.05), 0.7), 1.3), 1.2)]
    torch.testing.assert_close(apply_photometric(images, params),
                               normalised(torch.stack(expected)), rtol=0, atol=2e-5)


def test_official_probabilities_over_many_crops():
    spec = MultiCropAugmentation(**AUG)
    fast = FastMultiCrop(spec)
    image = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    tables = []
    for i in range(300):
        views, grids, params = fast(image, generator=torch.Generator().manual_seed(i))
        assert [v.shape for v in views] == [(3, 64, 64)] * 2 + [(3, 32, 32)] * 4
        assert all(v.dtype == torch.uint8 for v in views)
        assert [g.shape for g in grids] == [(2, 2, 2)] * 2 + [(1, 1, 2)] * 4
        tables.append(params)
    p = torch.stack(tables)  # (samples, views, NUM_PARAMS)
    assert p.shape[-1] == NUM_PARAMS
    even, odd = p[:, [0, 2, 4]], p[:, [1, 3, 5]]  # even/odd index within each size group
    assert abs(float(p[..., JITTER_ON].mean()) - 0.8) < 0.04
    assert abs(float(p[..., GRAYSCALE].mean()) - 0.2) < 0.04
    assert abs(float(p[..., FLIPPED].mean()) - 0.5) < 0.05
    assert float(even[..., BLUR_ON].mean()) == 1.0 and float(even[..., SOLARIZE].sum()) == 0.0
    assert abs(float(odd[..., BLUR_ON].mean()) - 0.1) < 0.04
    assert abs(float(odd[..., SOLARIZE].mean()) - 0.2) < 0.05
    jittered = p[p[..., JITTER_ON] > 0]
    assert ((jittered[:, 1] >= 0.6) & (jittered[:, 1] <= 1.4)).all()
    assert ((jittered[:, 4] >= -0.1) & (jittered[:, 4] <= 0.1)).all()
    assert (jittered[:, 5:9].sort(dim=1).values == torch.arange(4.0)).all()  # permutations


def test_deterministic_per_seed_epoch_image_whatever_the_workers(folder):
    base = ImageFolderDataset(folder)
    spec = MultiCropAugmentation(**AUG)
    dataset, collate, _ = build_pipeline("fast", base, spec, 3, torch.device("cpu"), False)
    a, b = dataset[4], dataset[4]
    assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"]))
    assert torch.equal(a["photometric"], b["photometric"])
    later = dataset[4 + len(base)]  # same image, next epoch: new draws
    assert not torch.equal(a["photometric"], later["photometric"])
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(dataset, batch_size=3, sampler=[1, 4, 9],
                                             num_workers=workers, collate_fn=collate)
        batches.append(next(iter(loader)))
    assert isinstance(collate, FastCollate) and collate.photometric  # CPU: done in the workers
    for x, y in zip(batches[0]["views"], batches[1]["views"]):
        assert x.dtype == torch.float32 and torch.equal(x, y)


def test_decoding_and_unreadable_files(folder, tmp_path):
    path = sorted(folder.rglob("*.jpg"))[0]
    ours = decode_file(str(path))
    with Image.open(path) as img:
        reference = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
    assert ours.shape == reference.shape and ours.dtype == torch.uint8
    assert (ours.float() - reference.float()).abs().mean() < 2.0  # decoders differ slightly
    broken = tmp_path / "train" / "a" / "broken.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(path.read_bytes()[:200])
    good = tmp_path / "train" / "a" / "good.jpg"
    good.write_bytes(path.read_bytes())
    dataset = FastMultiCropDataset(ImageFolderDataset(tmp_path), FastMultiCrop(
        MultiCropAugmentation(**AUG)))
    sample = dataset[0]  # broken.jpg sorts first: replaced by good.jpg, and reported
    assert sample["skipped"] == [str(broken)]


def test_synthetic_scenes_and_the_engine_hook(tmp_path):
    """Datasets without files go through PIL -> uint8; a smoke run trains with pipeline=fast."""
    from pretrain.config import load_config
    from pretrain.engine import train

    spec = MultiCropAugmentation(**AUG)
    sample = FastMultiCropDataset(SyntheticDataset(2, 64), FastMultiCrop(spec))[1]
    assert len(sample["views"]) == 6
    cfg = load_config(
        "configs/pretrain/vicregl_convnext_mini_2x96+2x64_cpu_smoke.yaml",
        ["data.pipeline=fast", "data.num_images=16", "optim.batch_size=8", "optim.max_steps=2",
         "data.size_crops=[64,32]", "run.log_every_steps=1", f"run.output_dir={tmp_path / 'r'}"])
    assert train(cfg).is_file()
