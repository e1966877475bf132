"""Synthetic scenes with learnable structure, shared by every synthetic dataset of the suite.

An object's class is decided by its SHAPE and its TEXTURE, never by its colour (colours are
drawn at random per object), so a backbone has to learn shape and texture to separate the
classes: the demo's pretraining-versus-random comparison then means something. Needs only
numpy (PIL for writing files).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPES = ("disc", "square", "triangle", "cross")
TEXTURES = ("stripes", "checker")
NUM_CLASSES = len(SHAPES) * len(TEXTURES)
CLASS_NAMES = tuple(f"{t}_{s}" for t in TEXTURES for s in SHAPES)


@dataclass
class SceneObject:
    class_id: int  # in [0, NUM_CLASSES): shape = class_id % 4, texture = class_id // 4
    mask: np.ndarray  # (H, W) bool, visible pixels only (later objects occlude earlier ones)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), inclusive-exclusive, of the visible pixels."""
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float,
                angle: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "disc":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    if shape == "triangle":
        return (v <= r * 0.6) & (v >= -r + 1.6 * np.abs(u))
    if shape == "cross":
        arm = r * 0.35
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    raise ValueError(shape)


def _texture(texture: str, yy: np.ndarray, xx: np.ndarray, period: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    if texture == "stripes":
        return (np.floor(u / period) % 2).astype(bool)
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(bool)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour field plus mild noise."""
    coarse = rng.uniform(40, 215, size=(3, 3, 3))
    ys = np.linspace(0, 2, h)[:, None]
    xs = np.linspace(0, 2, w)[None, :]
    y0, x0 = np.clip(ys.astype(int), 0, 1), np.clip(xs.astype(int), 0, 1)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    top = coarse[y0, x0] * (1 - fx) + coarse[y0, x0 + 1] * fx
    bottom = coarse[y0 + 1, x0] * (1 - fx) + coarse[y0 + 1, x0 + 1] * fx
    field = top * (1 - fy) + bottom * fy
    return field + rng.normal(0, 6, size=(h, w, 3))


def render_scene(rng: np.random.Generator, height: int, width: int,
                 num_classes: int = NUM_CLASSES, min_objects: int = 1,
                 max_objects: int = 4) -> tuple[np.ndarray, list[SceneObject]]:
    """Draw one scene: (H, W, 3) uint8 image and its visible objects (class, mask)."""
    if not 1 <= num_classes <= NUM_CLASSES:
        raise ValueError(f"num_classes must be in [1, {NUM_CLASSES}], got {num_classes}")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = _background(rng, height, width)
    owner = np.full((height, width), -1, dtype=np.int64)
    classes = []
    side = min(height, width)
    for index in range(int(rng.integers(min_objects, max_objects + 1))):
        class_id = int(rng.integers(num_classes))
        r = rng.uniform(0.12, 0.3) * side
        cy, cx = rng.uniform(r * 0.6, height - r * 0.6), rng.uniform(r * 0.6, width - r * 0.6)
        mask = _shape_mask(SHAPES[class_id % 4], yy, xx, cy, cx, r, rng.uniform(0, np.pi / 2))
        if mask.sum() < 16:
            continue
        pattern = _texture(TEXTURES[class_id // 4], yy, xx, rng.uniform(0.08, 0.14) * side,
                           rng.uniform(0, np.pi))
        colours = rng.uniform(0, 255, size=(2, 3))
        while np.abs(colours[0] - colours[1]).sum() < 150:  # the texture must stay visible
            colours = rng.uniform(0, 255, size=(2, 3))
        image[mask] = np.where(pattern[mask][:, None], colours[0], colours[1])
        owner[mask] = index
        classes.append((index, class_id))
    objects = [SceneObject(c, owner == i) for i, c in classes if (owner == i).sum() >= 16]
    return np.clip(image, 0, 255).astype(np.uint8), objects


def semantic_map(objects: list[SceneObject], height: int, width: int, background: int = 0,
                 offset: int = 1) -> np.ndarray:
    """(H, W) uint8 label map: ``background`` where no object, ``class_id + offset`` inside."""
    label = np.full((height, width), background, dtype=np.uint8)
    for obj in objects:
        label[obj.mask] = obj.class_id + offset
    return label


def write_image_folder(root: str | Path, num_images: int, size: int = 96, seed: int = 0,
                       num_classes: int = NUM_CLASSES) -> Path:
    """Write scenes as an ImageNet-layout ImageFolder (``root/train/<class>/*.jpg``), the folder
    named after the scene's largest object; returns ``root/train``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    train = Path(root) / "train"
    for i in range(num_images):
        image, objects = render_scene(rng, size, size, num_classes)
        label = max(objects, key=lambda o: o.mask.sum()).class_id if objects else 0
        folder = train / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"scene_{i:06d}.jpg", quality=92)
    return train
