"""Throughput measurements for pretraining, used by ``tools/benchmark_pretrain.py``.

One *image* is one sample with all its views; throughputs are images per second. Every timing
excludes warm-up iterations and synchronises the device before the clock starts and after it
stops. The measured pieces, all built from a recipe config (``pretrain.config.load_config``)
with the engine's own builders, so the benchmark times what training runs:

- ``measure_step`` (the functions of ``step_calls``, timed by ``time_calls``): the ceiling
  (the backbone alone, forward and backward on the same views, batch, precision and memory
  format as the training step, trivial loss on the pooled output, no optimiser; views grouped
  per call as the model groups them), the step (``pretrain.step.train_step``: VICRegL
  forward, loss, backward, optimiser step, GradScaler when fp16, on device-resident inputs),
  and for the breakdown the criterion alone (forward and backward on fixed head outputs) and
  the optimiser step alone.
- ``loader_throughput`` / ``end_to_end``: the DataLoader over JPEG files on disk (PIL or fast
  pipeline, ``pretrain.pipeline``), alone and feeding the training step.
"""
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .backbones import feature_size
from .data import ImageFolderDataset, collate_multicrop
from .builder import build_augmentation, build_model, build_trainable, place, wrap_for_training
from .losses import weighted_total
from .pipeline import build_pipeline
from .step import FiniteLossGuard, autocast, train_step
from .synthetic import CLASS_NAMES, render_scene
from .transforms import location_grid, random_resized_crop_params


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def peak_memory(device: torch.device, result: dict):
    """Peak device memory (GiB) of the block into ``result["peak_gib"]``: CUDA
    ``max_memory_allocated``; on the CPU None (a process's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        result["peak_gib"] = None


def time_calls(calls: dict, device: torch.device, warmup: int, steps: int) -> dict:
    """Seconds per call of each function in ``calls`` (name -> fn), after ``warmup`` untimed
    calls, and its peak memory (``peak_memory``), as ``{name: {"s": ..., "peak_gib": ...}}``.

    On a GPU, one function after the other: total time of ``steps`` calls / steps,
    synchronising only at both ends (a sync per call would stop the host queuing ahead, which is
    part of what is measured). On the CPU, the functions take turns call by call and each
    reports its median call: a shared CPU's load drifts while we measure, and alternating
    exposes every function to the same drift, so their ratios stay meaningful.
    """
    out = {name: {} for name in calls}
    if device.type == "cpu":
        durations: dict[str, list] = {name: [] for name in calls}
        for i in range(warmup + steps):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                if i >= warmup:
                    durations[name].append(time.perf_counter() - start)
        for name in calls:
            out[name] = {"s": float(np.median(durations[name])), "peak_gib": None}
        return out
    for name, fn in calls.items():
        with peak_memory(device, out[name]):
            for _ in range(warmup):
                fn()
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            synchronize(device)
        out[name]["s"] = (time.perf_counter() - start) / steps
    return out


def crop_plan(cfg: dict) -> list[tuple[int, int]]:
    """[(crop size, grid side)] per view, large crops first, as the recipe draws them."""
    d, arch = cfg["data"], cfg["model"]["arch"]
    return [(int(s), feature_size(arch, int(s)))
            for s, n in zip(d["size_crops"], d["num_crops"]) for _ in range(int(n))]


def synthetic_inputs(cfg: dict, batch: int, device: torch.device,
                     image_hw: tuple[int, int] = (375, 500), num_classes: int = 1000,
                     seed: int = 0):
    """Device-resident views (random pixels), location grids of real random-resized-crop boxes
    of an ``image_hw`` image (so location matching sees realistic overlaps) and labels."""
    g = torch.Generator().manual_seed(seed)
    d = cfg["data"]
    scales = [(lo, hi) for lo, hi, n in zip(d["min_scale_crops"], d["max_scale_crops"],
                                            d["num_crops"]) for _ in range(int(n))]
    memory = torch.channels_last if cfg["run"]["channels_last"] else torch.contiguous_format
    views, locations = [], []
    height, width = image_hw
    for (size, n), scale in zip(crop_plan(cfg), scales):
        views.append(torch.randn(batch, 3, size, size, generator=g).to(device).contiguous(
            memory_format=memory))
        grids = [location_grid(*random_resized_crop_params(width, height, scale, (3 / 4, 4 / 3),
                                                           g), n) for _ in range(batch)]
        locations.append(torch.stack(grids).to(device))
    labels = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    return views, locations, labels


def build_training(cfg: dict, device: torch.device, num_classes: int = 1000):
    """(model, optimiser, scaler, model to call), built by the engine's own builders
    (``pretrain.builder``) for one process; the learning rate is tiny so that timing barely
    moves the weights."""
    parts = build_trainable(build_model(cfg, num_classes), cfg, device)
    for group in parts.optimizer.param_groups:
        group["lr"] = 1e-6
    return parts.model, parts.optimizer, parts.scaler, wrap_for_training(parts.model, cfg,
                                                                         device)


def step_calls(cfg: dict, batch: int, device: torch.device, num_classes: int = 1000,
               breakdown: bool = True) -> dict:
    """The functions to time, on device-resident inputs:

    - ``ceiling``: the backbone alone, forward + backward, trivial loss (mean of the pooled
      output), views grouped per call as the model groups them, no optimiser;
    - ``step``: ``train_step`` with the engine's finiteness guard;
    - ``loss`` (``breakdown``): the criterion alone, forward + backward on fixed head outputs;
    - ``optimizer`` (``breakdown``): the optimiser step alone.
    """
    run = cfg["run"]
    precision = run["precision"]
    model, optimizer, scaler, train_model = build_training(cfg, device, num_classes)
    views, locations, labels = synthetic_inputs(cfg, batch, device, num_classes=num_classes)
    backbone = place(build_model(cfg, None).backbone, cfg, device)
    ceiling_backbone = torch.compile(backbone) if run["compile"] else backbone

    def ceiling():
        with autocast(precision, device):
            outputs = [ceiling_backbone(torch.cat([views[i] for i in index]) if len(index) > 1
                                        else views[index[0]])
                       for index in model._groups(views, model.fuse_views)]
        sum(pooled.float().mean() for _, pooled in outputs).backward()
        for p in backbone.parameters():  # freed here, so they do not count in the step's peak
            p.grad = None

    guard = FiniteLossGuard(device)
    every = run["check_finite_every_steps"]
    counter = {"step": 0}

    def step():
        i = counter["step"]
        train_step(train_model, optimizer, scaler, precision, views, locations, labels, guard, i,
                   strict_check=every == 1)
        if every > 1 and (i + 1) % every == 0:
            guard.check()
        counter["step"] += 1

    calls = {"ceiling": ceiling, "step": step}
    if breakdown:
        step()  # gradients and optimiser state exist before the optimiser is timed alone
        with torch.no_grad(), autocast(precision, device):
            outputs = model.forward_views(views)
        leaves = {k: [t.detach().requires_grad_(True) for t in v] for k, v in outputs.items()}

        def loss():
            weighted_total(model.criterion(leaves, locations), model.alpha).backward()

        calls.update(loss=loss, optimizer=optimizer.step)
    calls["_guard"] = guard
    return calls


def measure_step(cfg: dict, batch: int, device: torch.device, warmup: int = 5,
                 steps: int = 15, breakdown: bool = True) -> dict:
    """Images/s of the ceiling and the step, their ratio, peak memory, the loss's and the
    optimiser's times alone and the resulting shares of a step (heads and the rest: what
    remains after backbone, loss and optimiser)."""
    calls = step_calls(cfg, batch, device, breakdown=breakdown)
    guard = calls.pop("_guard")
    timed = time_calls(calls, device, warmup, steps)
    guard.check()
    step_s, ceiling_s = timed["step"]["s"], timed["ceiling"]["s"]
    result = {"ceiling_img_s": batch / ceiling_s, "step_img_s": batch / step_s,
              "ratio": ceiling_s / step_s, "ceiling_ms": ceiling_s * 1e3, "step_ms": step_s * 1e3,
              "peak_gib": timed["step"]["peak_gib"],
              "ceiling_peak_gib": timed["ceiling"]["peak_gib"]}
    if breakdown:
        loss_s, optimizer_s = timed["loss"]["s"], timed["optimizer"]["s"]
        result.update(loss_ms=loss_s * 1e3, optimizer_ms=optimizer_s * 1e3,
                      share_backbone=ceiling_s / step_s, share_loss=loss_s / step_s,
                      share_optimizer=optimizer_s / step_s,
                      share_heads_rest=1 - (ceiling_s + loss_s + optimizer_s) / step_s)
    return result


# ---------------------------------------------------------------- data pipeline


def write_jpeg_folder(root: str | Path, num_images: int, height: int = 375, width: int = 500,
                      seed: int = 0, processes: int = 1) -> Path:
    """Synthetic scenes (``pretrain.synthetic.render_scene``) as ImageNet-layout JPEGs
    (quality 90) of ``height`` x ``width``; reused when ``root`` already holds the same set."""
    root = Path(root)
    marker = root / f".complete-{num_images}-{height}x{width}-{seed}"
    if marker.is_file():
        return root / "train"
    jobs = [(root, i, height, width, seed) for i in range(num_images)]
    if processes > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pool.starmap(_write_one, jobs, chunksize=8)
    else:
        for job in jobs:
            _write_one(*job)
    marker.write_text("")
    return root / "train"


def _write_one(root: Path, index: int, height: int, width: int, seed: int) -> None:
    from PIL import Image

    image, objects = render_scene(np.random.default_rng([seed, index]), height, width)
    label = max(objects, key=lambda o: o.mask.sum()).class_id if objects else 0
    folder = root / "train" / CLASS_NAMES[label]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"scene_{index:06d}.jpg", quality=90)


def build_loader(cfg: dict, root: Path, batch: int, workers: int, pipeline: str,
                 device: torch.device, num_batches: int):
    """A DataLoader over ``root`` with the recipe's augmentation and ``pipeline``, yielding
    ``num_batches`` batches, plus the function that turns a batch into device views.
    ``pipeline="fast-workers"``: the fast pipeline's worker side alone (uint8 crops and
    parameters, no photometric step), what the workers must sustain when a GPU does the rest."""
    base = ImageFolderDataset(root)
    dataset, collate, to_device = build_pipeline(
        pipeline.replace("-workers", ""), base, build_augmentation(cfg),
        cfg["run"]["seed"], device, cfg["run"]["channels_last"])
    if pipeline == "fast-workers":
        collate, to_device = collate_multicrop, lambda batch: (batch["views"], None, None)
    indices = list(range(num_batches * batch))  # indices past len(base) are later epochs
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=indices, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=False,
        prefetch_factor=4 if workers else None)
    return loader, to_device


def loader_throughput(cfg: dict, root: Path, batch: int, workers: int, pipeline: str,
                      device: torch.device, batches: int = 20, warmup: int = 4) -> dict:
    """Images/s of the input pipeline alone, ending with normalised views on ``device``."""
    loader, to_device = build_loader(cfg, root, batch, workers, pipeline, device,
                                     batches + warmup)
    seconds = _timed_batches(loader, warmup, device, lambda i, sample: to_device(sample))
    return {"img_s": batches * batch / seconds}


def _timed_batches(loader, warmup: int, device: torch.device, work) -> float:
    """Seconds that ``work(i, sample)`` takes over the batches after the first ``warmup``."""
    start = None
    for i, sample in enumerate(loader):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        work(i, sample)
    synchronize(device)
    return time.perf_counter() - start


def end_to_end(cfg: dict, root: Path, batch: int, workers: int, pipeline: str,
               device: torch.device, batches: int = 20, warmup: int = 4,
               num_classes: int = 1000) -> dict:
    """Images/s from JPEG files to weight update: the loader feeding ``train_step``."""
    model, optimizer, scaler, train_model = build_training(cfg, device, num_classes)
    run = cfg["run"]
    guard = FiniteLossGuard(device)
    loader, to_device = build_loader(cfg, root, batch, workers, pipeline, device,
                                     batches + warmup)

    def step(i: int, sample: dict) -> None:
        views, locations, labels = to_device(sample)
        labels = labels if bool((sample["labels"] >= 0).all()) else None
        train_step(train_model, optimizer, scaler, run["precision"], views, locations, labels,
                   guard, i)

    seconds = _timed_batches(loader, warmup, device, step)
    guard.check()
    return {"img_s": batches * batch / seconds}

