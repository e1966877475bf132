"""Pretraining datasets: where images come from, and the multi-crop wrapper the engine loads.

Base datasets return ``(PIL RGB image, label int, path str)``; the label is -1 when unknown
(a file list without labels), so the online linear probe must skip such samples. Each has
``num_classes`` (None when there are no labels), which sizes the probe. Kinds:

- ``imagefolder``: ImageNet layout ``root/<class>/<image>``; ``root`` may also be the parent
  holding ``train/``. Labels index the sorted class folder names (torchvision's convention).
- ``filelist``: a text file, one image path per line, optionally followed by whitespace and an
  integer label; relative paths resolve against ``root`` (default: the list file's folder).
- ``synthetic``: scenes of ``pretrain.synthetic`` rendered in memory on demand (no files);
  label = class of the largest visible object.

``MultiCropDataset`` applies the multi-crop augmentation. Its index encodes the epoch
(image = index % len, epoch = index // len) and each sample's random draws come from a generator
seeded by (seed, epoch, image), so a sample's views do not depend on the number of DataLoader
workers, on their order, or on whether the run was resumed
(``pretrain.sampler.ResumableDistributedSampler`` yields such indices). Unreadable images are
reported, never silently dropped (see ``MultiCropDataset``).
"""
import heapq
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension

from .synthetic import NUM_CLASSES, render_world_scene

logger = logging.getLogger(__name__)

IMAGEFOLDER_LAYOUT = "root/<class>/<image> (ImageNet layout), or its parent holding train/"
FILELIST_LAYOUT = "one image path per line, optionally followed by whitespace and an integer label"


class UnreadableImageError(OSError):
    """An image that could not be opened or decoded; ``path`` names it."""

    def __init__(self, path: str, cause: BaseException):
        super().__init__(f"cannot read image {path}: {type(cause).__name__}: {cause}")
        self.path = path


def load_rgb(path: str) -> Image.Image:
    """Open and fully decode ``path`` as RGB; any failure becomes ``UnreadableImageError``.

    Decoding is forced here (``convert`` loads the pixels), so a truncated file fails now, in
    the dataset, and not later inside the augmentation."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as err:  # PIL raises OSError, SyntaxError, EOFError, ValueError, ...
        raise UnreadableImageError(path, err) from err


def _walk_once(top: str) -> list[tuple[str, list[tuple[str, int, object]]]]:
    """``sorted(os.walk(top, followlinks=True))`` entering each real folder once (a symbolic
    link back to a parent folder made os.walk list the images again at every level, and two
    such links hung it), each folder by its most direct path: (folder, its files) by folder,
    a file as (name, symbolic links followed to reach it, identity of the real file)."""
    visited, found = set(), []
    queue = [(0, top)]  # fewest links first
    while queue:
        depth, folder = heapq.heappop(queue)
        try:
            status = os.stat(folder)
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:  # os.walk skips unreadable folders too; say so
            logger.warning("image folder: cannot list %s (%s); skipped", folder, err)
            continue
        if (status.st_dev, status.st_ino) in visited:
            continue
        visited.add((status.st_dev, status.st_ino))
        files = []
        for entry in entries:
            links = depth + entry.is_symlink()
            try:
                is_dir = entry.is_dir()
            except OSError:  # a link loop of its own: listed, reported when read
                is_dir = False
            if is_dir:
                heapq.heappush(queue, (links, entry.path))
            else:
                files.append((entry.name, links, _identity(entry, status.st_dev)))
        found.append((folder, files))
    return sorted(found, key=lambda item: item[0])


def _identity(entry: os.DirEntry, device: int):
    """The real file behind a folder entry: its inode without a system call, unless it is a
    symbolic link (then followed; a dangling one or a loop is where it resolves to, and is
    skipped and counted when read, as any unreadable image)."""
    if not entry.is_symlink():
        return device, entry.inode()
    try:
        status = os.stat(entry.path)
    except OSError:
        return os.path.realpath(entry.path)
    return status.st_dev, status.st_ino


def scan_image_folder(root: str, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """torchvision's ``make_dataset`` (same order, extensions and empty-class error) listing
    each real file once. Symbolic links are followed, but a file reached more than once (a
    link to another class's folder or file, a link to a parent folder) is listed once: where
    it was reached through the fewest links (it duplicated images, under wrong classes too),
    else first; the others are counted in a log line."""
    candidates = []  # (path, class index, links followed, identity)
    for target_class in sorted(class_to_idx):
        class_dir = os.path.join(root, target_class)
        if not os.path.isdir(class_dir):
            continue
        for folder, files in _walk_once(class_dir):
            for name, links, identity in files:
                path = os.path.join(folder, name)
                if has_file_allowed_extension(path, IMG_EXTENSIONS):
                    candidates.append((path, class_to_idx[target_class], links, identity))
    best: dict = {}
    for position, (_, _, links, identity) in enumerate(candidates):
        if identity not in best or links < candidates[best[identity]][2]:
            best[identity] = position
    kept = sorted(best.values())
    if len(kept) < len(candidates):
        dropped = next(c[0] for i, c in enumerate(candidates) if best[c[3]] != i)
        logger.warning("image folder %s: %d files reached more than once through symbolic "
                       "links are listed once (e.g. %s)", root, len(candidates) - len(kept),
                       dropped)
    samples = [candidates[i][:2] for i in kept]
    labels = {label for _, label in samples}
    empty = sorted(c for c, i in class_to_idx.items() if i not in labels)
    if empty:
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}. "
                                f"Supported extensions are: {', '.join(IMG_EXTENSIONS)}")
    return samples


class ImageFolderDataset(Dataset):
    """Images in ``root/<class>/<image>``; ``root`` may be the ``train`` folder or its parent."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist; expected "
                                    f"{IMAGEFOLDER_LAYOUT}")
        if (root / "train").is_dir():
            root = root / "train"
        try:
            self.classes, class_to_idx = find_classes(str(root))
            samples = scan_image_folder(str(root), class_to_idx)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"image folder {root}: {err}; expected "
                                    f"{IMAGEFOLDER_LAYOUT}") from err
        self.root = root
        self.num_classes = len(self.classes)
        self.paths = [p for p, _ in samples]
        self.labels = [int(c) for _, c in samples]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int, str]:
        path = self.paths[index]
        return load_rgb(path), self.labels[index], path


def _int_or_none(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def parse_file_list(list_file: str | os.PathLike, root: str | os.PathLike | None = None
                    ) -> tuple[list[str], list[int]]:
    """Read a file list: (absolute paths, labels with -1 where none is given).

    A line is ``path`` or ``path label``; the label is the last whitespace-separated token when
    it is an integer (so paths may contain spaces). Blank lines and lines starting with ``#``
    are skipped."""
    list_file = Path(list_file).expanduser()
    if not list_file.is_file():
        raise FileNotFoundError(f"file list {list_file} does not exist; expected a text file "
                                f"with {FILELIST_LAYOUT}")
    base = Path(root).expanduser() if root is not None else list_file.parent
    paths, labels = [], []
    with open(list_file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            label = _int_or_none(parts[1]) if len(parts) == 2 else None
            if label is not None:
                line = parts[0]
                if label < -1:
                    raise ValueError(f"file list {list_file}, line {number}: label {label} is "
                                     "negative; expected an integer >= 0 (or -1 for unknown)")
            paths.append(str(base / line))  # an absolute path stays absolute
            labels.append(-1 if label is None else label)
    if not paths:
        raise ValueError(f"file list {list_file} lists no image; expected {FILELIST_LAYOUT}")
    return paths, labels


class FileListDataset(Dataset):
    """Images listed in a text file (see ``parse_file_list``). ``num_classes`` = largest label
    + 1, or None when no line has a label."""

    def __init__(self, list_file: str | os.PathLike, root: str | os.PathLike | None = None):
        self.paths, self.labels = parse_file_list(list_file, root)
        self.num_classes = max(self.labels) + 1 if max(self.labels) >= 0 else None
        # Only the first entry is checked (a stat per line is slow on network file systems):
        # it catches a wrong root at once; later missing files are reported when read.
        if not os.path.isfile(self.paths[0]):
            where = (f"root {root}" if root is not None
                     else f"the list's folder {Path(list_file).parent}")
            raise FileNotFoundError(f"file list {list_file}: first image {self.paths[0]} does "
                                    f"not exist (relative paths resolve against {where})")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int, str]:
        path = self.paths[index]
        return load_rgb(path), self.labels[index], path


class SyntheticDataset(Dataset):
    """``num_images`` synthetic scenes (``pretrain.synthetic``) of ``size`` x ``size`` pixels
    in ``world`` (mixed or dominant), rendered on demand: image ``i`` depends only on
    (seed, i). Label = the scene's class in its world (-1 if no object survived occlusion,
    which needs very small images)."""

    def __init__(self, num_images: int, size: int = 96, seed: int = 0,
                 num_classes: int = NUM_CLASSES, world: str = "mixed"):
        if num_images < 1 or size < 8:
            raise ValueError(f"synthetic dataset needs num_images >= 1 and size >= 8, got "
                             f"{num_images} and {size}")
        self.num_images, self.size, self.seed = num_images, size, seed
        self.num_classes, self.world = num_classes, world

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Image.Image, int, str]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"synthetic image {index} out of range [0, {self.num_images})")
        rng = np.random.default_rng([self.seed, index])
        image, _, label = render_world_scene(rng, self.size, self.world, self.num_classes)
        return (Image.fromarray(image), -1 if label is None else label,
                f"synthetic://seed{self.seed}/{index}")


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch generator seeded from (seed, epoch, index) through numpy's SeedSequence, which
    mixes the three so that neighbouring samples and epochs get unrelated streams."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class MultiCropDataset(Dataset):
    """Multi-crop views of a base dataset, deterministic per (seed, epoch, image).

    ``index`` may exceed ``len(self)``: image = index % len, epoch = index // len. Returns
    ``{"views", "locations", "label", "skipped"}``; ``ITEM_KEYS`` names what the transform
    returns, in order (``FastMultiCropDataset``'s also returns ``photometric``).

    An unreadable image (``UnreadableImageError``) is logged with its path and the error,
    replaced by the next readable image (its label too), and its path is returned in
    ``skipped`` so the training loop counts it. After ``max_consecutive_failures`` unreadable
    images in a row, an error naming them is raised: the data are broken, not one file.
    The replacement's augmentation still uses the requested (seed, epoch, image).
    """

    ITEM_KEYS = ("views", "locations")

    def __init__(self, base: Dataset, transform: Callable, seed: int = 0,
                 max_consecutive_failures: int = 50):
        if len(base) == 0:
            raise ValueError(f"{type(base).__name__} is empty")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.base, self.transform, self.seed = base, transform, seed
        self.max_consecutive_failures = max_consecutive_failures

    def __len__(self) -> int:
        return len(self.base)

    def _read(self, image_index: int) -> tuple[Image.Image, int, list[str]]:
        n = len(self.base)
        skipped, errors = [], []
        for attempt in range(min(self.max_consecutive_failures, n)):
            try:
                img, label, _ = self.base[(image_index + attempt) % n]
                return img, label, skipped
            except UnreadableImageError as err:
                logger.warning("skipping unreadable image %s: %s", err.path, err.__cause__)
                skipped.append(err.path)
                errors.append(str(err))
        raise RuntimeError(f"{len(skipped)} consecutive unreadable images starting at image "
                           f"{image_index} of {type(self.base).__name__}:\n  "
                           + "\n  ".join(errors))

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            raise IndexError(f"negative index {index}")
        epoch, image_index = divmod(index, len(self.base))
        img, label, skipped = self._read(image_index)
        out = self.transform(img, generator=sample_generator(self.seed, epoch, image_index))
        return {**dict(zip(self.ITEM_KEYS, out, strict=True)), "label": int(label),
                "skipped": skipped}


# Entries of a sample holding one value per view, in view order: stacked per view by
# ``collate_multicrop``. ``photometric`` (fast and memory pipelines) and ``boxes`` (memory)
# are present only in those pipelines' samples.
PER_VIEW_KEYS = ("views", "locations", "photometric", "boxes")


def collate_multicrop(batch: Sequence[dict]) -> dict:
    """The collate function of every pipeline (pil, fast, memory): each ``PER_VIEW_KEYS``
    entry the samples have, stacked per view (``views`` list of (B, 3, S, S), ``locations``
    list of (B, N, N, 2), ``photometric`` list of (B, NUM_PARAMS), ``boxes`` list of (B, 4)
    (top, left, h, w)); ``image`` (B,) long where the samples name their image (memory);
    ``labels`` (B,) long (-1 = unknown); ``skipped`` the unreadable paths of the whole batch."""
    first = batch[0]
    num_views = len(first["locations"])
    out = {key: [torch.stack([s[key][v] for s in batch]) for v in range(num_views)]
           for key in PER_VIEW_KEYS if key in first}
    if "image" in first:
        out["image"] = torch.tensor([s["image"] for s in batch], dtype=torch.long)
    out["labels"] = torch.tensor([s["label"] for s in batch], dtype=torch.long)
    out["skipped"] = [p for s in batch for p in s["skipped"]]
    return out


def build_dataset(kind: str, root: str | os.PathLike | None = None,
                  list_file: str | os.PathLike | None = None, num_images: int = 1024,
                  size: int = 96, seed: int = 0, world: str = "mixed") -> Dataset:
    """Base dataset by kind: ``imagefolder`` (needs root), ``filelist`` (needs list_file; root
    optional) or ``synthetic`` (num_images scenes of size px drawn from seed)."""
    if kind == "imagefolder":
        if root is None:
            raise ValueError(f"dataset kind 'imagefolder' needs root: {IMAGEFOLDER_LAYOUT}")
        return ImageFolderDataset(root)
    if kind == "filelist":
        if list_file is None:
            raise ValueError(f"dataset kind 'filelist' needs list_file: {FILELIST_LAYOUT}")
        return FileListDataset(list_file, root)
    if kind == "synthetic":
        return SyntheticDataset(num_images, size, seed, world=world)
    raise ValueError(f"unknown dataset kind {kind!r}; expected imagefolder, filelist or synthetic")
