"""VICRegL multi-crop augmentation: views plus the location grid of every view.

Each view is a random resized crop of the original image, then photometric augmentation. The
location grid gives, for every cell of the backbone's local feature map, the position of that
cell's centre in ORIGINAL image pixels, ``(row, col)``; VICRegL's location-based matching pairs
features of two views by these positions.

The recipe is the official one (``facebookresearch/VICRegL``, ``transforms.py``). Deviations,
all deliberate:

- The grid side N of each crop size is given by the caller (``grid_sizes``), normally the
  backbone's (``pretrain.backbones.feature_size(arch, size)``); the official code hard-codes 7 and 3 and fails for any crop
  size other than 224/96.
- The grid is computed in closed form (float64, then float32); the official code accumulates
  cell sizes in float32, which differs by float32 rounding only (about 1e-4 pixel on a
  1000-pixel image).
- ``flip_grid=False`` (our default) reproduces the official default ``--no-flip-grid 1``: a
  flipped crop keeps the unflipped grid, so in flipped views column l is labelled with the
  position of column N-1-l. ``flip_grid=True`` mirrors the grid, which is geometrically right.
- Every random draw goes through one ``torch.Generator`` when one is given (``__call__``'s
  ``generator``), so a sample's augmentation can depend only on a seed; the official code mixes
  torch's and numpy's global generators. Without a generator torch's global generator is used.
- The normalisation std is (0.228, 0.224, 0.225), as in the official code (the usual ImageNet
  red std is 0.229): kept so features match the released models.
"""
import math
from collections.abc import Sequence

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter
from torchvision.transforms import InterpolationMode

MEAN = (0.485, 0.456, 0.406)
STD = (0.228, 0.224, 0.225)  # sic: 0.228, as the official code

# Colour jitter strengths (brightness, contrast, saturation, hue), official values.
JITTER = (0.4, 0.4, 0.2, 0.1)
BLUR_SIGMA = (0.1, 2.0)
SOLARIZE_THRESHOLD = 128
# (blur probability, solarize probability) for even- and odd-index crops within a size group.
EVEN_CROP_PROBS = (1.0, 0.0)
ODD_CROP_PROBS = (0.1, 0.2)


def location_grid(top: float, left: float, height: float, width: float, n: int,
                  flipped: bool = False) -> torch.Tensor:
    """(n, n, 2) float32 grid: cell (k, l) = (top + (k + 1/2) h / n, left + (l + 1/2) w / n),
    (row, col) in original-image pixels. ``flipped`` mirrors the columns (the crop was flipped
    horizontally, so its column l shows original column n-1-l)."""
    if n < 1:
        raise ValueError(f"grid side must be >= 1, got {n}")
    steps = torch.arange(n, dtype=torch.float64) + 0.5
    rows = top + steps * (height / n)
    cols = left + steps * (width / n)
    if flipped:
        cols = cols.flip(0)
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)
    return grid.to(torch.float32)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _bernoulli(p: float, generator: torch.Generator | None) -> bool:
    return torch.rand((), generator=generator, dtype=torch.float64).item() < p


def random_resized_crop_params(width: int, height: int, scale: Sequence[float],
                               ratio: Sequence[float], generator: torch.Generator | None = None
                               ) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``scale`` of the area with aspect ratio in
    ``ratio`` (log-uniform); torchvision's ``RandomResizedCrop.get_params`` algorithm (10 tries,
    then a central crop clamped to ``ratio``), drawing from ``generator``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def color_jitter(img: Image.Image, strengths: Sequence[float],
                 generator: torch.Generator | None = None) -> Image.Image:
    """torchvision's ``ColorJitter``: brightness, contrast, saturation, hue in random order."""
    b, c, s, h = strengths
    factors = (_uniform(1 - b, 1 + b, generator), _uniform(1 - c, 1 + c, generator),
               _uniform(1 - s, 1 + s, generator), _uniform(-h, h, generator))
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in torch.randperm(4, generator=generator).tolist():
        img = ops[i](img, factors[i])
    return img


class MultiCropAugmentation:
    """Multi-crop views and location grids, large crops first.

    Args (official defaults; the ResNet-50 README recipe is ``size_crops=(224,)``,
    ``num_crops=(2,)``, ``min_scale_crops=(0.08,)``, ``max_scale_crops=(1.0,)``: multi-crop was
    hard to optimise with ResNets, paper section 3.2):
        size_crops: output side of each crop group, in pixels (large first).
        num_crops: number of crops in each group. Views 0 and 1 must be the large crops: the
            loss pairs every view with them.
        min_scale_crops / max_scale_crops: fraction of the image area each group's crops cover.
        grid_sizes: side N of the location grid of each group: the backbone's feature-map side
            for that crop size, ``pretrain.backbones.feature_size(arch, size)``; (7, 3) for
            224/96 px with ResNet or ConvNeXt.
        flip_grid: mirror the grid of flipped crops. False reproduces the official default
            (``--no-flip-grid 1``, flips ignored); True is geometrically right.
        flip_prob, jitter_prob, grayscale_prob: horizontal flip, colour jitter
            (``JITTER`` strengths) and grayscale probabilities, per crop.
        even_crop_probs / odd_crop_probs: (blur, solarize) probabilities of the even- and
            odd-index crops within each size group (official: (1.0, 0.0) and (0.1, 0.2)).

    ``__call__(img, generator=None) -> (views, locations)``: ``views`` a list of (3, S, S)
    float32 normalised tensors, ``locations`` a list of (N, N, 2) float32 grids, one per view.
    """

    def __init__(self, size_crops: Sequence[int] = (224, 96), num_crops: Sequence[int] = (2, 6),
                 min_scale_crops: Sequence[float] = (0.4, 0.08),
                 max_scale_crops: Sequence[float] = (1.0, 0.4),
                 grid_sizes: Sequence[int] = (7, 3), flip_grid: bool = False,
                 flip_prob: float = 0.5, jitter_prob: float = 0.8, grayscale_prob: float = 0.2,
                 even_crop_probs: Sequence[float] = EVEN_CROP_PROBS,
                 odd_crop_probs: Sequence[float] = ODD_CROP_PROBS,
                 ratio: Sequence[float] = (3 / 4, 4 / 3)):
        groups = (size_crops, num_crops, min_scale_crops, max_scale_crops, grid_sizes)
        if len({len(g) for g in groups}) != 1:
            raise ValueError("size_crops, num_crops, min_scale_crops, max_scale_crops and "
                             f"grid_sizes need one entry per crop group, got {groups}")
        for size, scale in zip(size_crops, zip(min_scale_crops, max_scale_crops)):
            if not 0 < scale[0] <= scale[1] <= 1:
                raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {scale} "
                                 f"for {size} px crops")
        if any(n < 1 for n in grid_sizes) or any(s < 1 for s in size_crops):
            raise ValueError(f"crop sizes and grid sizes must be positive, got {size_crops}, "
                             f"{grid_sizes}")
        if sum(num_crops) < 2 or num_crops[0] < 2:
            raise ValueError(f"the first group must hold the two large crops, got num_crops="
                             f"{tuple(num_crops)}")
        self.flip_grid = flip_grid
        self.flip_prob = flip_prob
        self.jitter_prob = jitter_prob
        self.grayscale_prob = grayscale_prob
        self.ratio = tuple(ratio)
        # One spec per view, in output order: (size, scale range, grid side, blur p, solarize p).
        self.crops = []
        for size, count, lo, hi, n in zip(size_crops, num_crops, min_scale_crops,
                                          max_scale_crops, grid_sizes):
            for j in range(count):
                blur_p, solarize_p = even_crop_probs if j % 2 == 0 else odd_crop_probs
                self.crops.append(dict(size=int(size), scale=(float(lo), float(hi)),
                                       grid=int(n), blur_p=float(blur_p),
                                       solarize_p=float(solarize_p)))

    def __len__(self) -> int:
        return len(self.crops)

    def _photometric(self, img: Image.Image, blur_p: float, solarize_p: float,
                     g: torch.Generator | None) -> Image.Image:
        if _bernoulli(self.jitter_prob, g):
            img = color_jitter(img, JITTER, g)
        if _bernoulli(self.grayscale_prob, g):
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        if _bernoulli(blur_p, g):
            # PIL's radius is the Gaussian's standard deviation, as the official code uses it.
            img = img.filter(ImageFilter.GaussianBlur(_uniform(*BLUR_SIGMA, g)))
        if _bernoulli(solarize_p, g):
            img = TF.solarize(img, SOLARIZE_THRESHOLD)
        return img

    def view(self, img: Image.Image, crop: dict,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One view and its location grid, for one entry of ``self.crops``."""
        width, height = img.size
        top, left, h, w = random_resized_crop_params(width, height, crop["scale"], self.ratio,
                                                     generator)
        out = TF.resized_crop(img, top, left, h, w, [crop["size"], crop["size"]],
                              InterpolationMode.BICUBIC)
        flipped = _bernoulli(self.flip_prob, generator)
        if flipped:
            out = TF.hflip(out)
        out = self._photometric(out, crop["blur_p"], crop["solarize_p"], generator)
        tensor = TF.normalize(TF.to_tensor(out), MEAN, STD)
        grid = location_grid(top, left, h, w, crop["grid"], flipped and self.flip_grid)
        return tensor, grid

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not isinstance(img, Image.Image):
            raise TypeError(f"MultiCropAugmentation expects a PIL image, got {type(img).__name__}")
        if img.mode != "RGB":
            img = img.convert("RGB")
        views, locations = [], []
        for crop in self.crops:
            view, grid = self.view(img, crop, generator)
            views.append(view)
            locations.append(grid)
        return views, locations

    def __repr__(self) -> str:
        groups = {}
        for c in self.crops:
            groups.setdefault((c["size"], c["scale"], c["grid"]), 0)
            groups[(c["size"], c["scale"], c["grid"])] += 1
        desc = ", ".join(f"{k}x{s}px scale={sc} grid={n}" for (s, sc, n), k in groups.items())
        return f"{type(self).__name__}({desc}, flip_grid={self.flip_grid})"
