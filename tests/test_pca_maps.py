"""transfer/evaluation/pca_maps.py: the shifted-input dense features are the stage's own features
interleaved, the PCA colouring is a deterministic projection, the figure is written."""
import numpy as np
import pytest
import torch

from transfer.evaluation.pca_maps import (colour_labels, pca_rgb, stage_features, upsample,
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
    out = write_pca_maps([("random init", "convnext_mini", "random:0")], tmp_path,
                         tmp_path / "maps" / "pca_maps.png", count=1)
    assert out.is_file() and Image.open(out).size[0] > 300
    with pytest.raises(FileNotFoundError, match="val.txt does not exist"):
        write_pca_maps([], tmp_path / "nowhere", tmp_path / "x.png")
