"""transfer/evaluation/pca_maps.py: the shifted-input dense features are the stage's own features
interleaved (any backbone: strides are measured), the PCA colouring is a deterministic
projection that separates clusters of cells, robust to outliers, the figure is written."""
import numpy as np
import pytest
import torch

from transfer.evaluation.pca_maps import (colour_labels, dense_features, fit_cells, fit_pca,
                                          pca_rgb, stage_features, stage_strides, upsample,
                                          write_pca_maps)


def test_shifted_features_interleave_the_plain_ones():
    from pretrain.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone("convnext_mini").eval()
    image = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    plain = stage_features(model, image, stage=4, shifts=1)
    dense = stage_features(model, image, stage=4, shifts=4)
    assert plain.shape[1:] == (2, 2) and dense.shape == (plain.shape[0], 8, 8)
    torch.testing.assert_close(dense[:, ::4, ::4], plain)  # shift (0, 0) is the plain input
    with pytest.raises(ValueError, match="must divide"):
        stage_features(model, image, stage=4, shifts=3)


def test_pca_rgb_projects_onto_the_principal_directions():
    # two channels carry a pattern along x and along y; the rest is nothing
    h, w = 4, 5
    features = torch.zeros(6, h, w)
    features[0] = torch.arange(w).float()[None, :].expand(h, w) * 10  # largest variance
    features[3] = torch.arange(h).float()[:, None].expand(h, w)
    rgb = pca_rgb(features)
    assert rgb.shape == (h, w, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert np.allclose(rgb[..., 0], np.tile(np.arange(w) / (w - 1), (h, 1)), atol=1e-6)
    assert np.allclose(rgb[..., 1], np.tile((np.arange(h) / (h - 1))[:, None], (1, w)), atol=1e-6)
    assert np.allclose(rgb[..., 2], 0.0)  # no third direction


class OutputStride8(torch.nn.Module):
    """A tiny BatchNorm conv net of output stride 8 (strides 4, 8, 8, 8: stages 3 and 4
    dilated) with ``forward_stages``: the kind of backbone the demo is moving to."""

    def __init__(self):
        super().__init__()

        def block(cin, cout, stride, dilation=1):
            return torch.nn.Sequential(
                torch.nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation),
                torch.nn.BatchNorm2d(cout), torch.nn.ReLU())

        self.stages = torch.nn.ModuleList([
            torch.nn.Sequential(block(3, 8, 2), block(8, 8, 2)), block(8, 16, 2),
            block(16, 24, 1, 2), block(24, 32, 1, 4)])

    def forward_stages(self, x):
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


@pytest.mark.parametrize("arch", ["convnext_mini", "resnet18", "os8"])
def test_dense_features_of_every_stage_on_one_grid(arch):
    from pretrain.backbones import build_backbone

    torch.manual_seed(0)
    model = OutputStride8().eval() if arch == "os8" else build_backbone(arch).eval()
    strides = stage_strides(model)
    assert strides == ([4, 8, 8, 8] if arch == "os8" else [4, 8, 16, 32])
    image = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    dense = dense_features(model, image)  # stages 1-4 on the 4-pixel grid of stage 1
    channels = [o.shape[1] for o in model.forward_stages(torch.zeros(1, 3, 64, 64))]
    assert dense.shape == (sum(channels), 16, 16)
    # each stage's part is L2-normalised per cell, and at shift (0, 0) it is the stage itself
    first = 0
    for stage, (c, stride) in enumerate(zip(channels, strides), start=1):
        part = dense[first:first + c]
        torch.testing.assert_close(part.norm(dim=0), torch.ones(16, 16))
        plain = torch.nn.functional.normalize(stage_features(model, image, stage), dim=0)
        torch.testing.assert_close(part[:, ::stride // 4, ::stride // 4], plain[:, :16, :16])
        first += c
    with pytest.raises(ValueError, match="cell must divide"):
        dense_features(model, image, stages=(2, 3), cell=3)


def _two_regions(rng, h=12, w=12, noise=0.1):
    """(8, h, w) features: cells inside a disc near a vector ``a``, the others near ``b``,
    plus a position gradient in another channel (what a map should NOT show) and noise."""
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 4) ** 2
    a, b = np.zeros(8), np.zeros(8)
    a[1], b[2] = 1.0, 1.0
    features = np.where(disc[..., None], a, b) + noise * rng.standard_normal((h, w, 8))
    features[..., 5] += 0.3 * xx / w
    return torch.from_numpy(features).permute(2, 0, 1).float(), disc


def test_pca_of_two_clusters_separates_the_two_regions():
    features, disc = _two_regions(np.random.default_rng(0))
    rgb = pca_rgb(features)  # one map, fitted on itself
    first = rgb[..., 0]
    # the first component is the clusters, not the gradient: every disc cell above every
    # other one; the top-left cell (background) at the low end
    assert first[disc].min() > first[~disc].max() and first[0, 0] < 0.5


def test_pca_fitted_on_many_maps_is_robust_to_outliers():
    rng = np.random.default_rng(0)
    maps = [_two_regions(rng)[0] for _ in range(6)]
    maps[3][:, 0, 0] = torch.tensor([0.0, 40.0, -40.0, 0, 0, 0, 0, 0])  # one extreme cell
    shown, disc = _two_regions(rng)
    robust = pca_rgb(shown, fit_pca(fit_cells(maps)))[..., 0]  # 1-99th percentile ends
    assert robust[disc].min() > robust[~disc].max()
    assert robust[disc].mean() > 0.8 and robust[~disc].mean() < 0.2  # the full range used
    squashed = pca_rgb(shown, fit_pca(fit_cells(maps), clip=0.0))[..., 0]  # min-max ends
    assert squashed[disc].mean() - squashed[~disc].mean() < 0.2  # the outlier took the range
    # at most MAX_CELLS cells, the first kept (it fixes the signs)
    cells = fit_cells(maps, limit=100)
    assert cells.shape == (100, 8) and torch.equal(cells[0], maps[0][:, 0, 0])


def test_upsample_and_label_colours():
    grid = np.arange(4, dtype=float).reshape(2, 2, 1).repeat(3, axis=2)
    big = upsample(grid, 4, 6)
    assert big.shape == (4, 6, 3) and big[0, 0, 0] == 0 and big[3, 5, 0] == 3
    palette = [0, 0, 0, 128, 0, 0] + [0] * (256 * 3 - 6)
    rgb = colour_labels(np.array([[0, 1], [255, 1]], dtype=np.uint8), palette)
    assert rgb[0, 1].tolist() == [128, 0, 0] and rgb[1, 0].tolist() == [255, 255, 255]


def test_write_pca_maps_on_the_synthetic_voc_layout(tmp_path):
    from PIL import Image

    from transfer.synthetic.segmentation import write_voc12aug

    write_voc12aug(tmp_path, 2, 1, 64, 0)
    out = write_pca_maps([("random init", "convnext_mini", "random:0"),
                          ("random R18", "resnet18", "random:0")], tmp_path,
                         tmp_path / "maps" / "pca_maps.png", count=1)
    assert out.is_file() and Image.open(out).size[0] > 400
    with pytest.raises(FileNotFoundError, match="val.txt does not exist"):
        write_pca_maps([], tmp_path / "nowhere", tmp_path / "x.png")
