"""The fast input pipeline, worker side: decode once, crop and flip on uint8, draw the rest.

The PIL pipeline (``pretrain.transforms.MultiCropAugmentation``) spends most of its time in
the photometric augmentation of float images, one image at a time. Here a worker only
decodes the file (``torchvision.io.decode_image``: libjpeg-turbo for JPEG), takes the
random resized crops on the uint8 tensor (bicubic with antialiasing, as PIL's resize), flips
them, computes the location grids from the crop boxes (``pretrain.transforms.location_grid``)
and DRAWS the photometric parameters of every view, which ``pretrain.photometric`` then applies
to the whole batch on the training device.

Every random draw comes from the sample's generator (``pretrain.data.sample_generator``,
seeded by (seed, epoch, image)) in exactly the order the PIL pipeline draws them, so both
pipelines give a sample the same crop boxes, flips and photometric parameters; only the pixel
arithmetic differs (float instead of PIL's per-operation uint8 rounding, libjpeg-turbo
instead of PIL's decoder, torchvision's Gaussian kernel instead of PIL's box-blur
approximation). ``tests/test_fast_pipeline.py`` checks the equal draws and the closeness of
the pixels.
"""
import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import InterpolationMode

from .data import MultiCropDataset, UnreadableImageError, load_rgb
from .transforms import (BLUR_SIGMA, JITTER, MultiCropAugmentation, location_grid,
                         random_resized_crop_params)

# Column of each photometric parameter in the (views, NUM_PARAMS) table a sample carries.
JITTER_ON, BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3, 4
ORDER = slice(5, 9)  # the colour-jitter operations in application order (0 b, 1 c, 2 s, 3 h)
GRAYSCALE, BLUR_ON, SIGMA, SOLARIZE, FLIPPED = 9, 10, 11, 12, 13
NUM_PARAMS = 14
IDENTITY = (0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0)

# Formats torchvision decodes natively; anything else goes through PIL (slower, same pixels).
NATIVE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def _uniform(low: float, high: float, g: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=g, dtype=torch.float64).item()


def _bernoulli(p: float, g: torch.Generator) -> bool:
    return torch.rand((), generator=g, dtype=torch.float64).item() < p


def decode_file(path: str) -> torch.Tensor:
    """(3, H, W) uint8 RGB of the image file ``path``; failures raise ``UnreadableImageError``,
    which ``MultiCropDataset`` skips, names and counts, as in the PIL pipeline.

    JPEG, PNG, WebP and GIF are decoded by torchvision; other formats through PIL. EXIF
    orientation is ignored, as in the PIL pipeline. The PIL pipeline's guards hold here too:
    PIL reads the header first, so an image declaring more pixels than PIL's decompression-bomb
    limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``) is refused before anything is decoded; 16-bit
    PNGs come as 8 bits (the high byte), an animated GIF as its first frame."""
    if not path.lower().endswith(NATIVE_SUFFIXES):
        return pil_to_uint8(load_rgb(path))
    try:
        with Image.open(path):  # the header only: PIL's size limit, as load_rgb
            pass
        image = decode_image(read_file(path), mode=ImageReadMode.RGB)
        if image.ndim == 4:  # animated GIF: (frames, 3, H, W)
            image = image[0]
        if image.dtype == torch.uint16:  # 16-bit PNG
            image = F.to_dtype(image, torch.uint8, scale=True)
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"decoded to {image.dtype} {tuple(image.shape)}; expected a "
                             "(3, H, W) uint8 image")
        return image
    except Exception as err:  # torchvision raises RuntimeError for corrupt or truncated data
        raise UnreadableImageError(path, err) from err


def pil_to_uint8(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


class DecodedImages(Dataset):
    """A base dataset (``pretrain.data``) whose images come as (3, H, W) uint8 tensors.

    Datasets with ``paths`` (image folder, file list) are decoded straight from the files,
    skipping PIL; others (synthetic scenes) are converted from their PIL images."""

    def __init__(self, base: Dataset):
        self.base = base
        self.num_classes = getattr(base, "num_classes", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        if hasattr(self.base, "paths"):
            path = self.base.paths[index]
            return decode_file(path), self.base.labels[index], path
        img, label, path = self.base[index]
        return pil_to_uint8(img), label, path


class FastMultiCrop:
    """The multi-crop augmentation of ``spec`` (a ``MultiCropAugmentation``) split in two: the
    geometric part here, on uint8; the photometric part drawn here and applied later, batched
    (``pretrain.photometric.apply_photometric``).

    ``__call__(image, generator) -> (views, locations, params)``: ``views`` a list of
    (3, S, S) uint8 crops (flipped where drawn), ``locations`` a list of (N, N, 2) grids and
    ``params`` a (views, NUM_PARAMS) float32 table (columns named by this module's constants).
    """

    def __init__(self, spec: MultiCropAugmentation):
        self.spec = spec

    def __len__(self) -> int:
        return len(self.spec)

    def _draw_photometric(self, crop: dict, g: torch.Generator, row: torch.Tensor) -> None:
        # Same draws, same order as MultiCropAugmentation._photometric and color_jitter.
        spec = self.spec
        if _bernoulli(spec.jitter_prob, g):
            b, c, s, h = JITTER
            row[JITTER_ON] = 1.0
            row[BRIGHTNESS] = _uniform(1 - b, 1 + b, g)
            row[CONTRAST] = _uniform(1 - c, 1 + c, g)
            row[SATURATION] = _uniform(1 - s, 1 + s, g)
            row[HUE] = _uniform(-h, h, g)
            row[ORDER] = torch.randperm(4, generator=g).to(torch.float32)
        row[GRAYSCALE] = float(_bernoulli(spec.grayscale_prob, g))
        if _bernoulli(crop["blur_p"], g):
            row[BLUR_ON] = 1.0
            row[SIGMA] = _uniform(*BLUR_SIGMA, g)
        row[SOLARIZE] = float(_bernoulli(crop["solarize_p"], g))

    def draw(self, height: int, width: int, crop: dict, g: torch.Generator
             ) -> tuple[tuple[int, int, int, int], torch.Tensor, torch.Tensor]:
        """Every random draw of one view of a ``height`` x ``width`` image, in the PIL
        pipeline's order: the crop box (top, left, h, w), its location grid and the parameter
        table row (``FLIPPED`` set when flipped). ``pretrain.memory_pipeline`` crops from
        these too."""
        box = random_resized_crop_params(width, height, crop["scale"], self.spec.ratio, g)
        row = torch.tensor(IDENTITY, dtype=torch.float32)
        flipped = _bernoulli(self.spec.flip_prob, g)
        row[FLIPPED] = float(flipped)
        self._draw_photometric(crop, g, row)
        grid = location_grid(*box, crop["grid"], flipped and self.spec.flip_grid)
        return box, grid, row

    def view(self, image: torch.Tensor, crop: dict, g: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (top, left, h, w), grid, row = self.draw(*image.shape[-2:], crop, g)
        out = F.resized_crop(image, top, left, h, w, [crop["size"], crop["size"]],
                             interpolation=InterpolationMode.BICUBIC, antialias=True)
        if row[FLIPPED] > 0:
            out = out.flip(-1)
        return out.contiguous(), grid, row

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None):
        if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8
                and image.ndim == 3 and image.shape[0] == 3):
            raise TypeError("FastMultiCrop expects a (3, H, W) uint8 tensor, got "
                            f"{getattr(image, 'dtype', type(image).__name__)} "
                            f"{tuple(getattr(image, 'shape', ()))}")
        views, locations, rows = [], [], []
        for crop in self.spec.crops:
            view, grid, row = self.view(image, crop, generator)
            views.append(view)
            locations.append(grid)
            rows.append(row)
        return views, locations, torch.stack(rows)


class FastMultiCropDataset(MultiCropDataset):
    """``MultiCropDataset`` (same indexing, seeding and unreadable-image handling) over decoded
    uint8 images; items also carry ``photometric``, the (views, NUM_PARAMS) table. Batched by
    ``pretrain.data.collate_multicrop`` (views of (B, 3, S, S) uint8)."""

    ITEM_KEYS = ("views", "locations", "photometric")

    def __init__(self, base: Dataset, transform: FastMultiCrop, seed: int = 0,
                 max_consecutive_failures: int = 50):
        super().__init__(DecodedImages(base), transform, seed, max_consecutive_failures)
