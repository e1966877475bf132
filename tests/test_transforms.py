"""Multi-crop augmentation and location grids (pretrain/transforms.py)."""
import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.backbones import build_backbone, feature_size
from pretrain.transforms import (MEAN, STD, MultiCropAugmentation, location_grid,
                                 random_resized_crop_params)
from conftest import THREADS  # noqa: E402

torch.set_num_threads(THREADS)

# Geometry only: no photometric change, so pixel values can be read back.
NO_PHOTOMETRIC = dict(jitter_prob=0.0, grayscale_prob=0.0, even_crop_probs=(0.0, 0.0),
                      odd_crop_probs=(0.0, 0.0))


def coordinate_image(width: int = 240, height: int = 160) -> Image.Image:
    """Red = column, green = row of each pixel (both < 256), blue constant."""
    yy, xx = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([xx, yy, np.full_like(xx, 128)], -1).astype(np.uint8))


def denormalise(view: torch.Tensor) -> torch.Tensor:
    """(3, S, S) normalised view -> pixel values in [0, 255]."""
    return (view * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]) * 255


def test_location_grid_known_box():
    grid = location_grid(top=10, left=20, height=70, width=35, n=7)
    assert grid.shape == (7, 7, 2) and grid.dtype == torch.float32
    assert grid[0, 0].tolist() == pytest.approx([15.0, 22.5])
    assert grid[6, 6].tolist() == pytest.approx([75.0, 52.5])
    assert grid[3, 1].tolist() == pytest.approx([10 + 3.5 * 10, 20 + 1.5 * 5])
    # rows vary along k only, columns along l only
    assert torch.all(grid[:, :, 0] == grid[:, :1, 0]) and torch.all(grid[:, :, 1] == grid[:1, :, 1])


def test_location_grid_flip_mirrors_columns():
    grid = location_grid(5, 7, 30, 60, 3)
    flipped = location_grid(5, 7, 30, 60, 3, flipped=True)
    assert torch.equal(flipped[:, :, 0], grid[:, :, 0])
    for col in range(3):
        assert torch.equal(flipped[:, col], grid[:, 2 - col])
    assert flipped[0, 0, 1].item() == pytest.approx(7 + 2.5 * 20)


def test_random_resized_crop_params_within_image_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        top, left, h, w = random_resized_crop_params(300, 200, (0.08, 0.4), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 200 and 0 <= left and left + w <= 300
        assert 0.07 <= h * w / 60000 <= 0.41  # rounding of h and w
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    # an image too elongated for any crop in ratio: central crop at the extreme ratio
    assert random_resized_crop_params(1000, 10, (0.9, 1.0), (3 / 4, 4 / 3), g) == (0, 493, 10, 13)


@pytest.mark.parametrize("arch", ["resnet18", "convnext_mini"])
def test_grid_follows_backbone_feature_map_for_any_crop_size(arch):
    backbone = build_backbone(arch).eval()
    img = coordinate_image()
    for size in (64, 96, 100, 128, 160, 224):
        sizes = (size, max(32, size // 2))
        grids = tuple(feature_size(arch, s) for s in sizes)
        aug = MultiCropAugmentation(size_crops=sizes, num_crops=(2, 1), min_scale_crops=(0.4, 0.1),
                                    max_scale_crops=(1.0, 0.4), grid_sizes=grids)
        views, locations = aug(img, generator=torch.Generator().manual_seed(size))
        assert len(views) == len(locations) == 3
        for view, grid, crop_size, n in zip(views, locations, (sizes[0],) * 2 + (sizes[1],),
                                           (grids[0],) * 2 + (grids[1],)):
            assert view.shape == (3, crop_size, crop_size) and view.dtype == torch.float32
            assert grid.shape == (n, n, 2) and grid.dtype == torch.float32
        with torch.no_grad():
            maps, _ = backbone(views[0][None])
        assert maps.shape[1] == locations[0].shape[0] * locations[0].shape[1]
    # the two backbones round differently: 100 px gives 4x4 on ResNet, 3x3 on ConvNeXt
    assert feature_size(arch, 100) == (4 if arch == "resnet18" else 3)


def test_default_recipe_is_official():
    aug = MultiCropAugmentation()
    assert len(aug) == 8
    assert [c["size"] for c in aug.crops] == [224] * 2 + [96] * 6
    assert [c["grid"] for c in aug.crops] == [7] * 2 + [3] * 6
    assert [c["scale"] for c in aug.crops] == [(0.4, 1.0)] * 2 + [(0.08, 0.4)] * 6
    # even index within a size group: blur always, never solarize; odd: blur 0.1, solarize 0.2
    probs = [(c["blur_p"], c["solarize_p"]) for c in aug.crops]
    assert probs == [(1.0, 0.0), (0.1, 0.2)] + [(1.0, 0.0), (0.1, 0.2)] * 3
    assert aug.flip_grid is False and aug.flip_prob == 0.5
    assert (aug.jitter_prob, aug.grayscale_prob) == (0.8, 0.2)
    assert MEAN == (0.485, 0.456, 0.406) and STD == (0.228, 0.224, 0.225)


def test_normalisation_constants_on_a_flat_image():
    colour = (200, 100, 50)
    img = Image.new("RGB", (120, 90), colour)
    aug = MultiCropAugmentation(size_crops=(64, 32), num_crops=(2, 2), grid_sizes=(2, 1),
                                **NO_PHOTOMETRIC)
    views, _ = aug(img, generator=torch.Generator().manual_seed(0))
    expected = [(c / 255 - m) / s for c, m, s in zip(colour, MEAN, STD)]
    for view in views:
        for channel in range(3):
            assert torch.allclose(view[channel], torch.full_like(view[channel], expected[channel]),
                                  atol=1e-5)


@pytest.mark.parametrize("flip_prob", [0.0, 0.5, 1.0])
def test_grid_cells_map_back_to_their_original_pixels(flip_prob):
    """Each cell's average pixel of the view holds the original (col, row) of its centre."""
    img = coordinate_image()
    aug = MultiCropAugmentation(size_crops=(128, 64), num_crops=(2, 3), min_scale_crops=(0.3, 0.2),
                                max_scale_crops=(1.0, 0.5), grid_sizes=(4, 2), flip_grid=True,
                                flip_prob=flip_prob, **NO_PHOTOMETRIC)
    for seed in range(4):
        views, locations = aug(img, generator=torch.Generator().manual_seed(seed))
        for view, grid in zip(views, locations):
            n, size = grid.shape[0], view.shape[-1]
            pixels = denormalise(view)
            cells = pixels.reshape(3, n, size // n, n, size // n).mean(dim=(2, 4))  # (3, n, n)
            # pixel value v is the pixel with index v, whose centre is v + 0.5 in grid units
            measured = torch.stack([cells[1], cells[0]], dim=-1) + 0.5
            assert torch.allclose(measured, grid, atol=1.0), (seed, measured - grid)


def test_official_default_ignores_flips():
    """flip_grid=False (official --no-flip-grid 1): flipped crops keep the unflipped grid."""
    img = coordinate_image()
    kwargs = dict(size_crops=(128,), num_crops=(2,), min_scale_crops=(0.5,),
                  max_scale_crops=(1.0,), grid_sizes=(4,), flip_prob=1.0, **NO_PHOTOMETRIC)
    generator = torch.Generator().manual_seed(3)
    views, official = MultiCropAugmentation(flip_grid=False, **kwargs)(img, generator=generator)
    generator = torch.Generator().manual_seed(3)
    views_mirrored, mirrored = MultiCropAugmentation(flip_grid=True, **kwargs)(
        img, generator=generator)
    for v, w in zip(views, views_mirrored):
        assert torch.equal(v, w)  # same crops, only the grids differ
    for grid, good in zip(official, mirrored):
        assert torch.equal(grid, good.flip(1))
        assert (grid[:, :, 1] - good[:, :, 1]).abs().max() > 20  # wrong columns, not noise


def test_solarize_and_grayscale_rates():
    """Solarize only the odd crops of a group (p=0.2); grayscale when asked."""
    img = Image.new("RGB", (64, 64), (200, 200, 200))  # solarized: 55
    aug = MultiCropAugmentation(size_crops=(16, 8), num_crops=(2, 2), grid_sizes=(1, 1),
                                jitter_prob=0.0, grayscale_prob=0.0)
    g = torch.Generator().manual_seed(0)
    solarized = np.zeros(4)
    trials = 300
    for _ in range(trials):
        views, _ = aug(img, generator=g)
        solarized += [float(denormalise(v).mean() < 128) for v in views]
    rates = solarized / trials
    assert rates[0] == 0 and rates[2] == 0
    assert 0.12 < rates[1] < 0.28 and 0.12 < rates[3] < 0.28

    colourful = Image.new("RGB", (64, 64), (200, 30, 90))
    grey = MultiCropAugmentation(size_crops=(16,), num_crops=(2,), min_scale_crops=(0.4,),
                                 max_scale_crops=(1.0,), grid_sizes=(1,), grayscale_prob=1.0,
                                 jitter_prob=0.0)
    views, _ = grey(colourful, generator=torch.Generator().manual_seed(0))
    for view in views:
        pixels = denormalise(view)
        assert torch.allclose(pixels[0], pixels[1], atol=1e-3)
        assert torch.allclose(pixels[1], pixels[2], atol=1e-3)


def test_generator_makes_views_reproducible():
    img = coordinate_image()
    aug = MultiCropAugmentation(size_crops=(64, 32), num_crops=(2, 2), grid_sizes=(2, 1))
    a = aug(img, generator=torch.Generator().manual_seed(7))
    b = aug(img, generator=torch.Generator().manual_seed(7))
    c = aug(img, generator=torch.Generator().manual_seed(8))
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, y) for x, y in zip(a[0], c[0]))
    # without a generator, torch's global generator drives the draws
    torch.manual_seed(1)
    d = aug(img)
    torch.manual_seed(1)
    e = aug(img)
    assert all(torch.equal(x, y) for x, y in zip(d[0], e[0]))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="one entry per crop group"):
        MultiCropAugmentation(size_crops=(224, 96), grid_sizes=(7,))
    with pytest.raises(ValueError, match="0 < min <= max <= 1"):
        MultiCropAugmentation(min_scale_crops=(0.5, 0.08), max_scale_crops=(0.4, 0.4))
    with pytest.raises(ValueError, match="two large crops"):
        MultiCropAugmentation(num_crops=(1, 6))
    with pytest.raises(TypeError, match="PIL image"):
        MultiCropAugmentation()(torch.zeros(3, 32, 32))
