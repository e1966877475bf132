"""Synthetic scenes with learnable structure, shared by every synthetic dataset of the suite.

A scene is a smooth grey background with several overlapping objects (3 to 5 by default). An
object's class is its TEXTURE (stripes, checker, dots, rings); its shape, size, position,
orientation, texture period and grey levels are drawn at random, so the class can only be read
from the local pattern, never from colour or outline. Images are grey (three equal channels):
without colour, the only thing that tells two scenes or two places of a scene apart is which
pattern lies where, which is what a self-supervised criterion has to encode (with random
colours, colour statistics are the easiest invariant and the features learnt first; see
docs/suites.md, "The demo").

Two worlds (``WORLDS``):

- ``mixed``: the objects carry distinct textures while classes last (a scene shows several
  classes); the image-level class is that of its largest visible object. Dense labels here
  are what pooled features cannot give.
- ``dominant``: the scene has a class c and all its objects carry texture c except ONE
  distractor of another class; the image-level class is c. Pooled features can answer it, so
  the global task (k-NN on pooled features) separates learnt features from random ones; in
  the mixed world every backbone, pretrained or not, stays near chance on it
  (docs/suites.md, "The demo").

Needs only numpy.

The generator lives here, in pretrain/, because pretraining renders scenes in memory
(``data.kind=synthetic``) and pretrain/ never imports transfer/; the writers that save scenes
as datasets on disk (ImageFolder, VOC, Cityscapes, ADE20k, COCO) are in transfer/synthetic/.
"""
from dataclasses import dataclass

import numpy as np


SHAPES = ("disc", "square", "triangle", "cross")
TEXTURES = ("stripes", "checker", "dots", "rings")
NUM_CLASSES = len(TEXTURES)
CLASS_NAMES = TEXTURES
MIN_OBJECTS, MAX_OBJECTS = 3, 5
RADIUS = (0.15, 0.3)  # object radius, fraction of the image's short side
PERIOD = (0.08, 0.14)  # texture period, fraction of the image's short side
MIN_PIXELS = 16  # smaller visible objects are dropped (and not labelled)
WORLDS = ("mixed", "dominant")


@dataclass
class SceneObject:
    class_id: int  # in [0, NUM_CLASSES): the texture, TEXTURES[class_id]
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
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _texture(texture: str, yy: np.ndarray, xx: np.ndarray, period: float, angle: float,
             cy: float, cx: float) -> np.ndarray:
    """Boolean pattern of ``texture`` with the given period and orientation; rings are
    centred on the object (cy, cx)."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    if texture == "stripes":
        return (np.floor(u / period) % 2).astype(bool)
    if texture == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(bool)
    if texture == "dots":
        fu, fv = (u / period) % 1 - 0.5, (v / period) % 1 - 0.5
        return fu**2 + fv**2 < 0.09
    if texture == "rings":
        return (np.floor(np.hypot(yy - cy, xx - cx) / (0.8 * period)) % 2).astype(bool)
    raise ValueError(f"unknown texture {texture!r}; expected one of {TEXTURES}")


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth grey field (mid grey, +-15 levels of slow variation) plus mild noise."""
    coarse = rng.uniform(-1, 1, size=(3, 3))
    ys = np.linspace(0, 2, h)[:, None]
    xs = np.linspace(0, 2, w)[None, :]
    y0, x0 = np.clip(ys.astype(int), 0, 1), np.clip(xs.astype(int), 0, 1)
    fy, fx = ys - y0, xs - x0
    top = coarse[y0, x0] * (1 - fx) + coarse[y0, x0 + 1] * fx
    bottom = coarse[y0 + 1, x0] * (1 - fx) + coarse[y0 + 1, x0 + 1] * fx
    field = rng.uniform(90, 165) + 15 * (top * (1 - fy) + bottom * fy)
    return field + rng.normal(0, 3, size=(h, w))


def _grey_levels(rng: np.random.Generator) -> tuple[float, float]:
    """The two grey levels of an object's pattern: one dark, one light, in random order
    (contrast >= 115 levels, so the texture stays visible)."""
    dark, light = rng.uniform(0, 70), rng.uniform(185, 255)
    return (dark, light) if rng.random() < 0.5 else (light, dark)


def _classes(rng: np.random.Generator, count: int, num_classes: int) -> list[int]:
    """Distinct classes while they last (a scene shows several classes), then any."""
    first = rng.permutation(num_classes)[:count].tolist()
    return first + rng.integers(num_classes, size=count - len(first)).tolist()


def _dominant_classes(rng: np.random.Generator, count: int, num_classes: int,
                      scene_class: int) -> list[int]:
    """``count`` objects of ``scene_class`` but one distractor of another class, placed at a
    random depth (it may occlude or be occluded)."""
    classes = [scene_class] * count
    if num_classes > 1:
        others = [c for c in range(num_classes) if c != scene_class]
        classes[int(rng.integers(count))] = others[int(rng.integers(len(others)))]
    return classes


def render_scene(rng: np.random.Generator, height: int, width: int,
                 num_classes: int = NUM_CLASSES, min_objects: int = MIN_OBJECTS,
                 max_objects: int = MAX_OBJECTS, scene_class: int | None = None
                 ) -> tuple[np.ndarray, list[SceneObject]]:
    """Draw one scene: (H, W, 3) uint8 grey image and its visible objects (class, mask).
    ``scene_class`` given: the ``dominant`` world (all objects of that class but one)."""
    if not 1 <= num_classes <= NUM_CLASSES:
        raise ValueError(f"num_classes must be in [1, {NUM_CLASSES}], got {num_classes}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = _background(rng, height, width)
    owner = np.full((height, width), -1, dtype=np.int64)
    side = min(height, width)
    count = int(rng.integers(min_objects, max_objects + 1))
    placed = []
    classes = (_classes(rng, count, num_classes) if scene_class is None
               else _dominant_classes(rng, count, num_classes, scene_class))
    for index, class_id in enumerate(classes):
        r = rng.uniform(*RADIUS) * side
        cy, cx = rng.uniform(r * 0.6, height - r * 0.6), rng.uniform(r * 0.6, width - r * 0.6)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        mask = _shape_mask(shape, yy, xx, cy, cx, r, rng.uniform(0, np.pi / 2))
        if mask.sum() < MIN_PIXELS:
            continue
        pattern = _texture(TEXTURES[class_id], yy, xx, rng.uniform(*PERIOD) * side,
                           rng.uniform(0, np.pi), cy, cx)
        first, second = _grey_levels(rng)
        image[mask] = np.where(pattern[mask], first, second)
        owner[mask] = index
        placed.append((index, class_id))
    objects = [SceneObject(c, owner == i) for i, c in placed if (owner == i).sum() >= MIN_PIXELS]
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), objects


def semantic_map(objects: list[SceneObject], height: int, width: int, background: int = 0,
                 offset: int = 1) -> np.ndarray:
    """(H, W) uint8 label map: ``background`` where no object, ``class_id + offset`` inside."""
    label = np.full((height, width), background, dtype=np.uint8)
    for obj in objects:
        label[obj.mask] = obj.class_id + offset
    return label


def image_class(objects: list[SceneObject]) -> int | None:
    """The scene's image-level class: that of its largest visible object (None if none)."""
    return max(objects, key=lambda o: o.mask.sum()).class_id if objects else None


def render_world_scene(rng: np.random.Generator, size: int, world: str = "mixed",
                       num_classes: int = NUM_CLASSES
                       ) -> tuple[np.ndarray, list[SceneObject], int | None]:
    """A ``size`` x ``size`` scene of ``world`` (``WORLDS``) and its image-level class (None
    when no object survived, which needs tiny images)."""
    if world == "mixed":
        image, objects = render_scene(rng, size, size, num_classes)
        return image, objects, image_class(objects)
    if world == "dominant":
        scene_class = int(rng.integers(num_classes))
        image, objects = render_scene(rng, size, size, num_classes, scene_class=scene_class)
        return image, objects, scene_class if objects else None
    raise ValueError(f"unknown synthetic world {world!r}; expected one of {', '.join(WORLDS)}")
