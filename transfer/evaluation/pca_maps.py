"""PCA maps of a backbone's local features: what each backbone "sees" in one image.

The feature map of one stage (C channels on an h x w grid) is reduced to its 3 principal
components (computed on that image's own feature vectors), each scaled to [0, 1] and shown as
RGB, upsampled to the image. Regions a backbone represents alike get the same colour, so
features that separate objects from background and from each other show the scene's layout.
Backbones are read with the strict reader (transfer/weights.py). Needs torch, numpy, PIL and
matplotlib; no transfer framework.
"""
import textwrap
from pathlib import Path

import numpy as np
import torch

from pretrain.backbones import build_backbone
from pretrain.files import atomic_path
from pretrain.transforms import MEAN, STD
from transfer import datasets as ds
from transfer.weights import read_backbone


def load_backbone(arch: str, source: str) -> torch.nn.Module:
    """The backbone of ``arch`` with the weights of ``source`` (strict), in eval mode."""
    weights = read_backbone(source, arch)
    model = build_backbone(arch)
    model.load_state_dict(weights.state_dict)
    return model.eval()


@torch.no_grad()
def stage_features(model: torch.nn.Module, image: np.ndarray, stage: int = 4,
                   shifts: int = 1) -> torch.Tensor:
    """(C, h, w) features of ``stage`` (1-4) for an (H, W, 3) uint8 image, at the scale the
    backbone was trained on. ``shifts`` > 1 samples the stage's grid more densely: the input is
    shifted by multiples of stride / shifts pixels (reflect-padded) and the outputs are
    interleaved, so the grid has ``shifts`` times more cells per side, each a genuine feature
    of that stage."""
    if not 1 <= stage <= 4:
        raise ValueError(f"stage must be 1..4, got {stage}")
    stride = 2 ** (stage + 1)  # ResNet and ConvNeXt: strides 4, 8, 16, 32
    if shifts < 1 or stride % shifts:
        raise ValueError(f"shifts must divide the stage's stride {stride}, got {shifts}")
    x = torch.from_numpy(np.ascontiguousarray(image).copy()).permute(2, 0, 1).float() / 255.0
    x = ((x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])[None]
    height, width = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (0, stride, 0, stride), mode="reflect")
    step = stride // shifts
    crops = [padded[..., a * step:a * step + height, b * step:b * step + width]
             for a in range(shifts) for b in range(shifts)]
    out = model.forward_stages(torch.cat(crops))[stage - 1]  # (shifts^2, C, h, w)
    channels, h, w = out.shape[1:]
    # cell (i, j) of shift (a, b) is centred at (stride * i + step * a, ...): interleave
    out = out.reshape(shifts, shifts, channels, h, w).permute(2, 3, 0, 4, 1)
    return out.reshape(channels, h * shifts, w * shifts)


def pca_rgb(features: torch.Tensor) -> np.ndarray:
    """(C, h, w) features -> (h, w, 3) in [0, 1]: the first 3 principal components, each
    min-max scaled; the sign of each is fixed so the top-left cell is at its low end (the same
    scene part gets comparable colours across backbones). Fewer than 3 components: zeros."""
    channels, h, w = features.shape
    x = features.reshape(channels, h * w).T.double()
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    proj = (x @ vh[:3].T).float()
    out = torch.zeros(h * w, 3)
    for k in range(proj.shape[1]):
        comp = proj[:, k]
        if comp[0] > comp.mean():
            comp = -comp
        span = comp.max() - comp.min()
        out[:, k] = (comp - comp.min()) / span if span > 1e-12 else 0.0
    return out.reshape(h, w, 3).numpy()


def upsample(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour upsampling: every feature cell stays visible as a block."""
    rows = (np.arange(height) * rgb.shape[0] // height)
    cols = (np.arange(width) * rgb.shape[1] // width)
    return rgb[rows][:, cols]


def colour_labels(label: np.ndarray, palette: list[int], ignore: int = 255) -> np.ndarray:
    """(H, W) label indices -> (H, W, 3) uint8 with a flat 256-entry RGB palette; ``ignore``
    pixels white."""
    table = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    rgb = table[label]
    rgb[label == ignore] = 255
    return rgb


def pca_figure(images: list[np.ndarray], labels: list[np.ndarray],
               maps: dict[str, list[np.ndarray]], path: str | Path, title: str) -> Path:
    """One row per image: the image, its ground truth, then each backbone's PCA map (same
    size as the image). ``maps``: backbone label -> one (H, W, 3) map per image. Written
    atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["image", "ground truth"] + list(maps)
    fig, axes = plt.subplots(len(images), len(columns), squeeze=False,
                             figsize=(2.2 * len(columns), 2.3 * len(images) + 0.5))
    for i, (image, label) in enumerate(zip(images, labels)):
        panels = [image, label] + [m[i] for m in maps.values()]
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
    fig.suptitle(textwrap.fill(title, 22 * len(columns)), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def voc_val_samples(data_root: str | Path, count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first ``count`` validation images of the VOC layout under ``data_root``:
    (id, (H, W, 3) uint8 image, (H, W) label indices, 255 = void)."""
    from PIL import Image

    voc = ds.VOC12AUG.folder(data_root)
    listing = voc / ds.VOC_SPLITS / "val.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"{listing} does not exist: no VOC layout under {data_root} "
                                "(tools/make_synthetic_data.py or tools/demo.py writes one)")
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()][:count]
    samples = []
    for name in ids:
        image = np.asarray(Image.open(voc / ds.VOC_IMAGES / f"{name}.jpg").convert("RGB"))
        label = np.asarray(Image.open(voc / ds.VOC_LABELS / f"{name}.png"))
        samples.append((name, image, label))
    return samples


def write_pca_maps(backbones: list[tuple[str, str, str]], data_root: str | Path,
                   path: str | Path, count: int = 2, stage: int = 4, shifts: int = 4) -> Path:
    """The PCA figure for ``backbones`` = [(label, arch, source)] on ``count`` VOC validation
    images of ``data_root``; returns the PNG's path."""
    samples = voc_val_samples(data_root, count)
    maps: dict[str, list[np.ndarray]] = {}
    grid = ""
    for label, arch, source in backbones:
        model = load_backbone(arch, source)
        maps[label] = []
        for _, image, _ in samples:
            features = stage_features(model, image, stage, shifts)
            grid = f"{features.shape[1]}x{features.shape[2]}"
            maps[label].append(upsample(pca_rgb(features), *image.shape[:2]))
    palette = ds.voc_palette()
    title = (f"3 principal components of each backbone's stage-{stage} features as RGB "
             f"({grid} grid: {shifts}x{shifts} shifted inputs interleaved); VOC-layout "
             "validation images")
    return pca_figure([s[1] for s in samples], [colour_labels(s[2], palette) for s in samples],
                      maps, path, title)
