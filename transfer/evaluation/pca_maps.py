"""PCA maps of a backbone's local features: what each backbone "sees" in a few images.

Every backbone gets the same procedure (random init included):

1. dense features (``dense_features``): the maps of several stages (``forward_stages``), each
   read on a common fine grid of ``cell``-pixel cells by shifting the input by multiples of
   ``cell`` and interleaving the outputs (every cell a genuine feature of its stage, no
   interpolation), each stage's vector L2-normalised per cell, the stages concatenated;
2. one PCA per backbone (``fit_pca``), fitted on the cells of MANY images (validation and
   training images of the layout), so a component is a direction that varies across scenes
   (object vs background, one texture vs another) rather than across one image's positions;
3. each of the first 3 components clipped to its 1st-99th percentile over the fitted cells
   and scaled to [0, 1] (robust against a few extreme cells), shown as RGB (``pca_rgb``),
   upsampled to the image.

Regions a backbone represents alike get the same colour, so features that separate objects
from background and from each other show the scene's layout. The strides of the stages are
measured (``stage_strides``), so any ``pretrain.backbones`` backbone works (ResNet, ConvNeXt,
output stride 32 or 8). Backbones are read with the strict reader (transfer/weights.py). Needs
torch, numpy, PIL and matplotlib; no transfer framework.
"""
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretrain.backbones import build_backbone
from pretrain.common.files import atomic_path
from pretrain.transforms import MEAN, STD
from transfer import datasets as ds
from transfer.weights import read_backbone

STAGES = (1, 2, 3, 4)  # the stages whose features are concatenated: every scale
CLIP = 1.0  # percentile clipped at each end of a component
FIT_IMAGES = 16  # images whose cells the PCA is fitted on (validation first, then training)
MAX_CELLS = 50_000  # cells the PCA is fitted on at most (an even subsample beyond)


def load_backbone(arch: str, source: str) -> torch.nn.Module:
    """The backbone of ``arch`` with the weights of ``source`` (strict), in eval mode."""
    weights = read_backbone(source, arch)
    model = build_backbone(arch)
    model.load_state_dict(weights.state_dict)
    return model.eval()


@torch.no_grad()
def stage_strides(model: torch.nn.Module, probe: int = 128) -> list[int]:
    """The input pixels per cell of each of the four stages, measured on a ``probe`` x
    ``probe`` input (e.g. [4, 8, 16, 32]; a dilated output-stride-8 ResNet: [4, 8, 8, 8])."""
    outs = model.forward_stages(torch.zeros(1, 3, probe, probe))
    return [max(1, round(probe / out.shape[-1])) for out in outs]


def _normalised(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(image).copy()).permute(2, 0, 1).float() / 255.0
    return ((x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])[None]


@torch.no_grad()
def _shifted_stages(model, image: np.ndarray, shifts: list[int], step: int,
                    batch: int = 16) -> list[torch.Tensor]:
    """``forward_stages`` of the image shifted by (a * step, b * step) pixels (reflect-padded),
    a, b < ``shifts[s]`` for stage s + 1: four tensors (k, k, C_s, h_s, w_s), k = shifts[s]
    (a stage only keeps the shifts it is read at)."""
    x = _normalised(image)
    height, width = x.shape[-2:]
    most = max(shifts)
    padded = torch.nn.functional.pad(x, (0, most * step, 0, most * step), mode="reflect")
    offsets = [(a, b) for a in range(most) for b in range(most)]
    kept: list[list[torch.Tensor]] = [[] for _ in range(4)]
    for first in range(0, len(offsets), batch):
        chunk = offsets[first:first + batch]
        crops = torch.cat([padded[..., a * step:a * step + height, b * step:b * step + width]
                           for a, b in chunk])
        for s, out in enumerate(model.forward_stages(crops)):
            kept[s] += [o for (a, b), o in zip(chunk, out) if a < shifts[s] and b < shifts[s]]
    return [torch.stack(k).reshape(n, n, *k[0].shape) for k, n in zip(kept, shifts)]


def _interleave(out: torch.Tensor) -> torch.Tensor:
    """(k, k, C, h, w) outputs of k x k shifts -> (C, h * k, w * k): cell (i, j) of shift
    (a, b) is centred at (stride * i + step * a, ...)."""
    k, _, channels, h, w = out.shape
    return out.permute(2, 3, 0, 4, 1).reshape(channels, h * k, w * k)


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
    stride = stage_strides(model)[stage - 1]
    if shifts < 1 or stride % shifts:
        raise ValueError(f"shifts must divide the stage's stride {stride}, got {shifts}")
    per_stage = [shifts if s == stage - 1 else 1 for s in range(4)]
    return _interleave(_shifted_stages(model, image, per_stage, stride // shifts)[stage - 1])


@torch.no_grad()
def dense_features(model: torch.nn.Module, image: np.ndarray, stages=STAGES,
                   cell: int | None = None) -> torch.Tensor:
    """(sum of C_s, h, w): the ``stages``' features on one grid of ``cell`` pixels (default:
    the finest of the stages' strides; h = H // cell, or less where a stage's grid stops
    short), each stage L2-normalised per cell (every stage weighs the same), concatenated. A
    stage of stride S is read at S / cell shifts per side (as ``stage_features``), so every
    cell holds that stage's genuine feature, never an interpolation."""
    strides = stage_strides(model)
    chosen = [strides[s - 1] for s in stages]
    cell = cell or min(chosen)
    if any(s % cell for s in chosen):
        raise ValueError(f"cell must divide the strides {chosen} of stages {list(stages)}, "
                         f"got {cell}")
    shifts = [strides[s] // cell if s + 1 in stages else 1 for s in range(4)]
    shifted = _shifted_stages(model, image, shifts, cell)
    grids = [_interleave(shifted[s - 1]) for s in stages]
    h = min([image.shape[0] // cell] + [g.shape[1] for g in grids])
    w = min([image.shape[1] // cell] + [g.shape[2] for g in grids])
    return torch.cat([torch.nn.functional.normalize(g[:, :h, :w].float(), dim=0)
                      for g in grids])


@dataclass
class PCABasis:
    """A fitted PCA: ``mean`` (C,), ``components`` (k, C), and per component the ``low`` and
    ``high`` ends that map to 0 and 1."""
    mean: torch.Tensor
    components: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def project(self, cells: torch.Tensor) -> torch.Tensor:
        """(N, C) cells -> (N, k) component values."""
        return (cells.double() - self.mean) @ self.components.T


def fit_pca(cells: torch.Tensor, count: int = 3, clip: float = CLIP) -> PCABasis:
    """The first ``count`` principal directions of (N, C) ``cells``. Each component's sign is
    fixed so the first cell is at or below its mean (the first image's top-left cell, i.e. the
    same scene part, gets comparable colours across backbones); its ends are the ``clip`` and
    100 - ``clip`` percentiles of the cells' values (0: min and max)."""
    x = cells.double()
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    components = vh[:count].clone()
    values = (x - mean) @ components.T
    flip = values[0] > 0
    components[flip] *= -1
    values[:, flip] *= -1
    q = torch.tensor([clip / 100.0, 1.0 - clip / 100.0], dtype=values.dtype)
    ends = torch.quantile(values, q, dim=0) if len(values) else torch.zeros(2, values.shape[1])
    return PCABasis(mean, components, ends[0], ends[1])


def pca_rgb(features: torch.Tensor, basis: PCABasis | None = None) -> np.ndarray:
    """(C, h, w) features -> (h, w, 3) in [0, 1]: the first 3 principal components of
    ``basis`` (default: fitted on these features alone, min-max scaled), clipped to their
    ends. Fewer than 3 components (or a constant one): zeros."""
    channels, h, w = features.shape
    cells = features.reshape(channels, h * w).T
    basis = basis or fit_pca(cells, clip=0.0)
    values = basis.project(cells)
    out = torch.zeros(h * w, 3, dtype=torch.float64)
    for k in range(min(3, values.shape[1])):
        span = basis.high[k] - basis.low[k]
        if span > 1e-12:
            out[:, k] = ((values[:, k] - basis.low[k]) / span).clamp(0.0, 1.0)
    return out.float().reshape(h, w, 3).numpy()


def fit_cells(features: list[torch.Tensor], limit: int = MAX_CELLS) -> torch.Tensor:
    """The cells of every (C, h, w) map, (N, C), the first map's first; at most ``limit`` (an
    even subsample that keeps the first cell)."""
    cells = torch.cat([f.reshape(f.shape[0], -1).T for f in features])
    if len(cells) > limit:
        cells = cells[torch.linspace(0, len(cells) - 1, limit).long()]
    return cells


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
                             figsize=(2.2 * len(columns), 2.3 * len(images) + 0.7))
    for i, (image, label) in enumerate(zip(images, labels)):
        panels = [image, label] + [m[i] for m in maps.values()]
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(textwrap.fill(columns[j], 24), fontsize=9)
    fig.suptitle(textwrap.fill(title, 24 * len(columns)), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def _voc_ids(data_root: str | Path, split: str) -> list[str]:
    listing = ds.VOC12AUG.folder(data_root) / ds.VOC_SPLITS / f"{split}.txt"
    if not listing.is_file():
        if split != "val":
            return []
        raise FileNotFoundError(f"{listing} does not exist: no VOC layout under {data_root} "
                                "(tools/make_synthetic_data.py or tools/demo.py writes one)")
    return [line.strip() for line in listing.read_text().splitlines() if line.strip()]


def _voc_image(data_root: str | Path, name: str) -> np.ndarray:
    from PIL import Image

    path = ds.VOC12AUG.folder(data_root) / ds.VOC_IMAGES / f"{name}.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def voc_val_samples(data_root: str | Path, count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first ``count`` validation images of the VOC layout under ``data_root``:
    (id, (H, W, 3) uint8 image, (H, W) label indices, 255 = void)."""
    from PIL import Image

    voc = ds.VOC12AUG.folder(data_root)
    samples = []
    for name in _voc_ids(data_root, "val")[:count]:
        label = np.asarray(Image.open(voc / ds.VOC_LABELS / f"{name}.png"))
        samples.append((name, _voc_image(data_root, name), label))
    return samples


def voc_fit_images(data_root: str | Path, count: int = FIT_IMAGES,
                   skip: int = 0) -> list[np.ndarray]:
    """Images ``skip`` to ``count`` of the VOC layout to fit the PCA on: the validation images
    first, then the training ones (``trainaug.txt``, else ``train.txt``)."""
    ids = _voc_ids(data_root, "val") + (_voc_ids(data_root, "trainaug")
                                        or _voc_ids(data_root, "train"))
    return [_voc_image(data_root, name) for name in list(dict.fromkeys(ids))[skip:count]]


def backbone_maps(model: torch.nn.Module, images: list[np.ndarray], shown: int,
                  stages=STAGES, cell: int | None = None) -> list[np.ndarray]:
    """(H, W, 3) maps of the first ``shown`` of ``images``: ``dense_features`` of ``stages``
    (on ``cell``-pixel cells) projected on the PCA fitted on the cells of all ``images``."""
    features = [dense_features(model, image, stages, cell) for image in images]
    basis = fit_pca(fit_cells(features))
    return [upsample(pca_rgb(f, basis), *image.shape[:2])
            for f, image in zip(features[:shown], images)]


def write_pca_maps(backbones: list[tuple[str, str, str]], data_root: str | Path,
                   path: str | Path, count: int = 2, stages=STAGES,
                   fit_count: int = FIT_IMAGES, cell: int | None = None) -> Path:
    """The PCA figure for ``backbones`` = [(label, arch, source)] on ``count`` VOC validation
    images of ``data_root``, each backbone's PCA fitted on up to ``fit_count`` images of the
    layout (the same for every backbone); returns the PNG's path."""
    samples = voc_val_samples(data_root, count)
    fit_images = [s[1] for s in samples] + voc_fit_images(data_root, fit_count, len(samples))
    maps: dict[str, list[np.ndarray]] = {}
    cells = {}  # cell size in pixels -> backbones
    for label, arch, source in backbones:
        model = load_backbone(arch, source)
        strides = stage_strides(model)
        cells.setdefault(cell or min(strides[s - 1] for s in stages), []).append(label)
        maps[label] = backbone_maps(model, fit_images, len(samples), stages, cell)
    sizes = ", ".join(f"{size}-pixel cells" + (f" ({', '.join(names)})" if len(cells) > 1 else "")
                      for size, names in cells.items())
    palette = ds.voc_palette()
    title = (f"3 principal components of each backbone's stage {'+'.join(map(str, stages))} "
             f"features (each L2-normalised per cell, {sizes}) as RGB; one PCA per backbone "
             f"fitted on the cells of {len(fit_images)} VOC-layout images, each component "
             f"clipped to its {CLIP:g}-{100 - CLIP:g}th percentile")
    return pca_figure([s[1] for s in samples], [colour_labels(s[2], palette) for s in samples],
                      maps, path, title)
