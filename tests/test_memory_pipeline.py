"""The in-memory batched pipeline (pretrain/memory_pipeline.py, ``data.pipeline=memory``): the
same draws and location grids as the other pipelines on fixed draws, crops whose pixels sit
where their grids say (flips included), the fast pipeline's pixels up to the resampling
filter, unreadable and odd-sized images handled by name."""
import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data import ImageFolderDataset, SyntheticDataset, collate_multicrop
from pretrain.fast_augment import FLIPPED, FastMultiCrop, FastMultiCropDataset
from pretrain.memory_pipeline import (MemoryDraws, build_views, crop_views, load_images,
                                      memory_dataset)
from pretrain.pipeline import build_pipeline
from pretrain.transforms import MultiCropAugmentation
from transfer.synthetic.image_folder import write_image_folder
from conftest import THREADS  # noqa: E402

torch.set_num_threads(THREADS)
AUG = dict(size_crops=(64, 32), num_crops=(2, 2), min_scale_crops=(0.3, 0.1),
           max_scale_crops=(1.0, 0.3), grid_sizes=(8, 4))


def spec(flip_grid: bool = True) -> MultiCropAugmentation:
    return MultiCropAugmentation(**AUG, flip_grid=flip_grid)


def test_same_draws_and_grids_as_the_fast_pipeline():
    base = SyntheticDataset(6, 64, seed=3)
    for flip_grid in (False, True):  # the official unflipped grid and the mirrored one
        transform = FastMultiCrop(spec(flip_grid))
        fast = FastMultiCropDataset(base, transform, seed=11)
        draws, _ = memory_dataset(base, transform, 11, 0, torch.device("cpu"))
        for index in (0, 5, 6 + 2, 6 * 7 + 1):  # several epochs
            a, b = fast[index], draws[index]
            assert a["label"] == b["label"] and b["image"] == index % 6
            assert torch.equal(a["photometric"], b["photometric"])  # same flips and factors
            for grid_a, grid_b in zip(a["locations"], b["locations"]):
                assert torch.equal(grid_a, grid_b)  # same crop boxes, same grid semantics


def coordinate_image(size: int = 64) -> torch.Tensor:
    """uint8 (3, size, size): channel 0 = 4 x row, channel 1 = 4 x column (linear ramps, so
    bilinear sampling reproduces positions exactly)."""
    rows = torch.arange(size, dtype=torch.float32).view(-1, 1).expand(size, size)
    image = torch.stack([4 * rows, 4 * rows.t(), torch.zeros(size, size)])
    return image.round().to(torch.uint8)


@pytest.mark.parametrize("flip_grid", [True, False])
def test_each_grid_cell_shows_the_place_its_location_names(flip_grid):
    """Average a crop's pixels over each cell of its local grid: on the coordinate image that
    is the position of the cell's centre in the original image, which the grid must name
    (mirrored grids for flipped crops; with the official unflipped grid, flipped crops
    disagree in the columns, which this test also shows)."""
    images = coordinate_image()[None].repeat(16, 1, 1, 1)
    draws = MemoryDraws(16, 64, 64, torch.zeros(16, dtype=torch.long), FastMultiCrop(spec(flip_grid)),
                        seed=5)
    batch = collate_multicrop([draws[i] for i in range(16)])
    views = build_views(images, batch, [64, 64, 32, 32])
    flipped_seen = False
    for view, grid, params in zip(views, batch["locations"], batch["photometric"]):
        n = grid.shape[1]
        cells = view.float().unflatten(2, (n, -1)).unflatten(4, (n, -1)).mean(dim=(3, 5))
        centre = cells[:, :2].permute(0, 2, 3, 1) / 4 + 0.5  # pixel k covers [k, k + 1)
        error = (centre - grid).abs()
        flipped = params[:, FLIPPED] > 0
        flipped_seen |= bool(flipped.any())
        assert float(error[..., 0].max()) < 0.3  # rows: always right
        if flip_grid:
            assert float(error[..., 1].max()) < 0.3
        else:
            assert float(error[~flipped][..., 1].max()) < 0.3
            if flipped.any():
                assert float(error[flipped][..., 1].max()) > 1.0
    assert flipped_seen


def test_pixels_close_to_the_fast_pipeline():
    """Same boxes; bilinear area sampling vs antialiased bicubic resizing differ a little."""
    base = SyntheticDataset(4, 64, seed=2)
    transform = FastMultiCrop(spec())
    fast = FastMultiCropDataset(base, transform, seed=1)
    draws, store = memory_dataset(base, transform, 1, 0, torch.device("cpu"))
    batch = collate_multicrop([draws[i] for i in range(4)])
    mine = build_views(store, batch, [64, 64, 32, 32])
    theirs = collate_multicrop([fast[i] for i in range(4)])["views"]
    for a, b in zip(mine, theirs):
        diff = (a.float() - b.float()).abs().mean() / 255
        assert diff < 0.06, diff  # a wrong box or flip gives ~0.2 on these textures


def test_crop_views_one_call_per_size_matches_cropping_one_by_one():
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    boxes = [torch.tensor([[0.0, 0, 40, 40], [5, 7, 20, 30], [10, 0, 30, 12]])] * 2
    together = crop_views(images, boxes, [16, 16])
    for b in range(3):
        alone = crop_views(images[b:b + 1], [x[b:b + 1] for x in boxes], [16, 16])
        torch.testing.assert_close(together[0][b], alone[0][0])
    full = crop_views(images, [boxes[0][:1].repeat(3, 1)], [40])[0]
    torch.testing.assert_close(full, images.float(), atol=1e-3, rtol=0)  # identity box


def test_to_device_gives_normalised_views_deterministically():
    base = SyntheticDataset(8, 64, seed=0)
    aug = spec()
    outs = []
    for _ in range(2):
        dataset, collate, to_device = build_pipeline("memory", base, aug, 4, torch.device("cpu"),
                                                     channels_last=True)
        views, locations, labels = to_device(collate([dataset[i] for i in (3, 9, 12)]))
        assert [v.shape for v in views] == [(3, 3, 64, 64)] * 2 + [(3, 3, 32, 32)] * 2
        assert all(v.dtype == torch.float32 and v.is_contiguous(memory_format=torch.channels_last)
                   for v in views)
        assert [g.shape for g in locations] == [(3, 8, 8, 2)] * 2 + [(3, 4, 4, 2)] * 2
        outs.append(views)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_unreadable_images_are_left_out_and_named(tmp_path, caplog):
    root = write_image_folder(tmp_path / "f", num_images=5, size=32, seed=0)
    bad = next(root.rglob("*.jpg"))
    bad.write_bytes(b"not a jpeg")
    images, labels, skipped = load_images(ImageFolderDataset(root), max_corrupt=1)
    assert skipped == [str(bad)] and images.shape == (4, 3, 32, 32) and len(labels) == 4
    assert str(bad) in caplog.text
    with pytest.raises(RuntimeError, match="more than data.max_corrupt"):
        load_images(ImageFolderDataset(root), max_corrupt=0)


def test_an_image_of_another_size_is_named(tmp_path):
    root = write_image_folder(tmp_path / "f", num_images=3, size=32, seed=0)
    odd = sorted(root.rglob("*.jpg"))[-1]
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(odd, format="JPEG")
    with pytest.raises(ValueError, match=rf"{odd}.*\(20, 24\).*data.pipeline=fast"):
        load_images(ImageFolderDataset(root), max_corrupt=0)
