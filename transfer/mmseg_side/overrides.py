"""Command-line arguments -> edits of an mmengine segmentation Config.

The experiment files fix the protocol; what changes per run (backbone, data root, GPUs,
and for tests or a CPU demo a shorter schedule and smaller crops) is applied here, never by
editing a config. Each function edits ``cfg`` in place and says what it did.
"""
import os
from pathlib import Path

from transfer.datasets import SEGMENTATION

# Pipeline transforms whose sizes scale with --crop-size, and the key holding the size.
_SIZED_TRANSFORMS = {"RandomResize": "scale", "Resize": "scale", "RandomCrop": "crop_size",
                     "Pad": "size"}


def world_size(launcher: str) -> int:
    """Number of processes the launcher starts (before torch.distributed is initialised)."""
    if launcher == "none":
        return 1
    variable = {"pytorch": "WORLD_SIZE", "slurm": "SLURM_NTASKS",
                "mpi": "OMPI_COMM_WORLD_SIZE"}[launcher]
    if variable not in os.environ:
        raise RuntimeError(f"--launcher {launcher} but ${variable} is not set: start with "
                           "torchrun (pytorch) or srun (slurm)")
    return int(os.environ[variable])


def dataset_cfgs(cfg) -> list[dict]:
    """Every dataset dict of the train/val/test dataloaders, inside wrappers too."""
    found = []

    def walk(node):
        if not isinstance(node, dict):
            return
        if "data_root" in node:
            found.append(node)
        walk(node.get("dataset"))
        for child in node.get("datasets", []) or []:
            walk(child)

    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader):
            walk(cfg[loader].get("dataset"))
    return found


def set_data_root(cfg, data_root: str | Path) -> Path:
    """Point every dataset at ``data_root/<the dataset's conventional sub-folder>``."""
    name = cfg.get("dataset_name")
    if name not in SEGMENTATION:
        raise ValueError(f"config has dataset_name={name!r}; expected one of "
                         f"{', '.join(SEGMENTATION)} (set by configs/segmentation/_base_/datasets)")
    root = Path(data_root) / cfg.dataset_subdir
    for dataset in dataset_cfgs(cfg):
        dataset["data_root"] = str(root)
    return root


def set_batch(cfg, total: int, world: int) -> int:
    """Split the protocol's total batch over ``world`` processes; returns the per-GPU batch."""
    if total % world:
        raise ValueError(f"total batch {total} does not split over {world} processes")
    cfg.train_dataloader.batch_size = total // world
    return total // world


def set_pretrained(cfg, checkpoint: str | Path) -> None:
    """The backbone's init loads ``checkpoint`` (a conversion of transfer.conversion)."""
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(checkpoint),
                                       prefix="backbone.")


def set_num_workers(cfg, num_workers: int) -> None:
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader):
            cfg[loader].num_workers = num_workers
            cfg[loader].persistent_workers = num_workers > 0


def set_max_iters(cfg, max_iters: int) -> float:
    """Shorten (or lengthen) the schedule to ``max_iters``, keeping its shape: scheduler
    boundaries (warm-up, poly decay), validation and checkpoint intervals scale by the same
    factor (at least 1 iteration each). Returns the factor."""
    old = cfg.train_cfg.max_iters
    factor = max_iters / old
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max(1, round(cfg.train_cfg.val_interval * factor))
    previous_end = 0
    for scheduler in cfg.param_scheduler:
        begin = max(round(scheduler.get("begin", 0) * factor), previous_end)
        end = round(scheduler.get("end", old) * factor)
        # at least 2 iterations: mmengine's LinearLR over begin..begin+1 sets the lr to
        # start_factor x lr and never raises it again (its ramp has end - begin - 1 = 0
        # steps), so a 1500-of-160k warm-up shrunk to 1 iteration trained at 1e-6 x lr
        scheduler.begin, scheduler.end = begin, max(end, begin + 2)
        previous_end = scheduler.end
    hooks = cfg.default_hooks
    hooks.checkpoint.interval = max(1, round(hooks.checkpoint.interval * factor))
    hooks.logger.interval = min(hooks.logger.interval, max_iters)
    return factor


def _scaled(value, factor: float):
    if isinstance(value, (list, tuple)):
        return type(value)(max(1, round(v * factor)) for v in value)
    return max(1, round(value * factor))


def set_crop_size(cfg, crop: int) -> float:
    """Scale every input size of the recipe by ``crop / short side of its crop``: resize
    scales, crops, padding, the preprocessor's pad size and sliding windows. For tests and
    CPU demos (e.g. ``--crop-size 64`` with 64-pixel synthetic images). Returns the factor."""
    factor = crop / min(cfg.crop_size)
    cfg.crop_size = _scaled(cfg.crop_size, factor)
    seen = set()  # a pipeline shared by two datasets must be scaled once

    def walk(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, dict):
            key = _SIZED_TRANSFORMS.get(node.get("type"))
            if key and node.get(key) is not None:
                node[key] = _scaled(node[key], factor)
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        walk(cfg.get(loader))
    model = cfg.model
    if model.data_preprocessor.get("size"):
        model.data_preprocessor.size = _scaled(model.data_preprocessor.size, factor)
    if model.test_cfg.get("mode") == "slide":
        model.test_cfg.crop_size = _scaled(model.test_cfg.crop_size, factor)
        model.test_cfg.stride = _scaled(model.test_cfg.stride, factor)
    return factor


MIN_CROP = 32  # the backbones' output stride: a smaller crop leaves no 1 x 1 feature map


def check_arguments(total_batch: int | None, max_iters: int | None, crop_size: int | None,
                    num_workers: int | None) -> None:
    """Raise ``ValueError`` naming the argument and its expected range, before any config
    edit (a zero batch or schedule would otherwise fail deep inside a data loader)."""
    problems = []
    for flag, value, low in (("--total-batch", total_batch, 1), ("--max-iters", max_iters, 1),
                             ("--crop-size", crop_size, MIN_CROP),
                             ("--num-workers", num_workers, 0)):
        if value is not None and value < low:
            problems.append(f"{flag} {value}: expected an integer >= {low}"
                            + (" (the backbones' output stride)" if flag == "--crop-size" else ""))
    if problems:
        raise ValueError("; ".join(problems))


def check_known_keys(cfg, options: dict) -> None:
    """``--cfg-options`` may only edit keys the config has: mmengine would add a misspelt
    key (``train_cfg.max_iter``) silently. Under ``model`` the last key may be new (module
    arguments the config leaves at their default); list indices are not checked."""
    tree = cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
    for dotted in options:
        node, parts = tree, dotted.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part.isdigit():
                break
            last = depth == len(parts) - 1
            if part not in node and not (last and parts[0] == "model"):
                known = ", ".join(sorted(map(str, node)))[:300]
                where = ".".join(parts[:depth]) or "the top level"
                raise ValueError(f"--cfg-options {dotted}: the config has no key {part!r} "
                                 f"under {where}; known there: {known}")
            node = node.get(part) if part in node else None
