"""The pretraining loop: one function, ``train(cfg)``, for one process, torchrun or SLURM.

Resumption is exact: the checkpoint holds the model, optimiser, GradScaler, step, RNG states
and config; the data order and each sample's augmentation depend only on (seed, epoch, index),
so a run killed at any moment and restarted reaches the same weights as an uninterrupted one.
"""
import io
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as dist_utils
from .checkpoint import TRAIN_FORMAT, atomic_save, export_backbone, git_sha
from .config import data_root
from .data import build_dataset
from .model import VICRegL
from .state_keys import load_strict
from .optim import build_optimizer, learning_rate
from .pipeline import build_pipeline
from .preflight import check_output_dir, check_pretrain_config
from .run_logging import RunLogger, log, plot_losses, setup_console
from .sampler import ResumableDistributedSampler
from .step import FiniteLossGuard, NonFiniteLossError, train_step  # noqa: F401 (re-exported)
from .transforms import MultiCropAugmentation
from .weight_files import load_state_file

CHECKPOINT_NAME = "checkpoint.pth"


def build_model(cfg: dict, num_classes: int | None) -> VICRegL:
    m, loss = cfg["model"], cfg["loss"]
    return VICRegL(arch=m["arch"], mlp_spec=m["mlp"], maps_mlp_spec=m["maps_mlp"],
                   alpha=loss["alpha"], num_matches=loss["num_matches"],
                   l2_all_matches=loss["l2_all_matches"], inv_coeff=loss["inv_coeff"],
                   var_coeff=loss["var_coeff"], cov_coeff=loss["cov_coeff"],
                   num_classes=num_classes, drop_path_rate=m["drop_path_rate"],
                   layer_scale_init_value=m["layer_scale_init_value"], fuse_views=m["fuse_views"],
                   fuse_heads=m["fuse_heads"])


def build_augmentation(cfg: dict, backbone: nn.Module) -> MultiCropAugmentation:
    d = cfg["data"]
    grids = [backbone.feature_size(s) for s in d["size_crops"]]
    return MultiCropAugmentation(size_crops=d["size_crops"], num_crops=d["num_crops"],
                                 min_scale_crops=d["min_scale_crops"],
                                 max_scale_crops=d["max_scale_crops"], grid_sizes=grids,
                                 flip_grid=d["flip_grid"])


def build_base_dataset(cfg: dict, root_override: str | None = None):
    d = cfg["data"]
    root = None if d["root"] is None else data_root(root_override) / d["root"]
    list_file = None if d["list_file"] is None else data_root(root_override) / d["list_file"]
    return build_dataset(d["kind"], root=root, list_file=list_file, num_images=d["num_images"],
                         size=d["image_size"], seed=cfg["run"]["seed"])


def read_resume_checkpoint(path: Path, cfg: dict) -> dict:
    """The training checkpoint to resume from, checked before any work: weights-only
    loading (a pickle that would run code is refused), our format, the recipe's arch."""
    state = load_state_file(path)
    hint = ("; the run stops and changes nothing in its folder: restore a good checkpoint.pth, "
            "or move this one aside to start from step 0")
    if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of this suite (expected a dict "
                         f"with format {TRAIN_FORMAT!r}, written by tools/pretrain.py){hint}")
    if state.get("arch") != cfg["model"]["arch"]:
        raise ValueError(f"{path} holds a {state.get('arch')} run but the recipe trains "
                         f"model.arch={cfg['model']['arch']}{hint}")
    missing = [k for k in ("model", "optimizer", "scaler", "step", "rng") if k not in state]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} (a damaged training "
                         f"checkpoint){hint}")
    return state


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                       for k, v in zip(("kind", "keys", "pos", "has_gauss", "cached"),
                                       np.random.get_state())}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy(), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _device(cfg: dict, local_rank: int) -> torch.device:
    choice = cfg["run"]["device"]
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but no CUDA device is visible")
    return torch.device(f"cuda:{local_rank}" if choice == "cuda" else "cpu")


def train(cfg: dict, data_root_override: str | None = None) -> Path:
    """Train (or resume) the run in ``cfg["run"]["output_dir"]``; returns its checkpoint path."""
    rank, world, local_rank = dist_utils.init_distributed()
    setup_console(rank)
    run, optim_cfg = cfg["run"], cfg["optim"]
    if run["precision"] not in ("fp16", "bf16", "fp32"):
        raise ValueError(f"run.precision must be fp16, bf16 or fp32, got {run['precision']!r}")
    if not isinstance(run["check_finite_every_steps"], int) or run["check_finite_every_steps"] < 1:
        raise ValueError("run.check_finite_every_steps must be an integer >= 1, got "
                         f"{run['check_finite_every_steps']!r}")
    check_pretrain_config(cfg)
    device = _device(cfg, local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: autotuned kernels (official)
    out = Path(run["output_dir"])
    ckpt_path = out / CHECKPOINT_NAME
    # read (and check) the checkpoint before anything in the folder is written
    resume = read_resume_checkpoint(ckpt_path, cfg) if ckpt_path.is_file() else None
    sha = git_sha()
    if rank == 0:
        check_output_dir(out, "run.output_dir")
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        log.info("git %s | recipe %s | %d process(es) on %s", sha, cfg["recipe"], world, device)
        log.info("config %s", json.dumps(cfg))

    seed = run["seed"]
    torch.manual_seed(seed + rank)
    random.seed(seed + rank)
    np.random.seed(seed + rank)

    base = build_base_dataset(cfg, data_root_override)
    num_classes = getattr(base, "num_classes", None) if run["probe"] else None
    model = build_model(cfg, num_classes)
    dataset, collate, to_device = build_pipeline(
        cfg["data"]["pipeline"], base, build_augmentation(cfg, model.backbone), seed, device,
        run["channels_last"])
    if world > 1 and run["sync_bn"]:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.warning("run.sync_bn: SyncBatchNorm needs CUDA; on the CPU BatchNorm "
                        "statistics stay per process")
    model.to(device)
    if run["channels_last"]:
        model.to(memory_format=torch.channels_last)

    batch = optim_cfg["batch_size"]
    if batch % world:
        raise ValueError(f"optim.batch_size {batch} is not divisible by {world} processes")
    per_rank = batch // world
    sampler = ResumableDistributedSampler(len(base), per_rank, rank, world, seed)
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = optim_cfg["epochs"] * steps_per_epoch
    warmup_steps = optim_cfg["warmup_epochs"] * steps_per_epoch
    last_step = min(total_steps, optim_cfg["max_steps"] or total_steps)

    optimizer = build_optimizer(model, optim_cfg["optimizer"], optim_cfg["weight_decay"],
                                fused=optim_cfg["fused"])
    scaler = torch.amp.GradScaler(device.type, enabled=run["precision"] == "fp16")

    step = 0
    corrupt: list[str] = []  # unreadable images skipped so far (saved with the checkpoint)
    if resume is not None:
        state = resume
        load_strict(model, state["model"], f"checkpoint {ckpt_path}")
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step = state["step"]
        corrupt.extend(state.get("corrupt", []))  # the count goes on across restarts
        _set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        log.info("resumed from %s at step %d", ckpt_path, step)

    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if run["compile"]:
        train_model = torch.compile(train_model)

    logger = RunLogger(out, enabled=rank == 0)
    logger.truncate_after(step)
    guard = FiniteLossGuard(device)
    check_every = run["check_finite_every_steps"]
    nan_hint = (f"; the last good checkpoint {ckpt_path} is kept. Lower optim.base_lr, or try "
                "run.precision=bf16.")

    def save(current_step: int) -> None:
        rng_states = [_rng_state()]
        if world > 1:  # every rank's RNG, gathered as bytes (tensors do not pickle over gloo)
            buffer = io.BytesIO()
            torch.save(rng_states[0], buffer)
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, buffer.getvalue())
            rng_states = [torch.load(io.BytesIO(b), weights_only=True) for b in gathered]
        if rank != 0:
            return
        atomic_save({"format": TRAIN_FORMAT, "arch": cfg["model"]["arch"],
                     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict(), "step": current_step,
                     "epoch": current_step // steps_per_epoch, "rng": rng_states,
                     "sampler": {"seed": seed, "batch_size": per_rank, "world_size": world},
                     "corrupt": list(corrupt),
                     "config": cfg, "git_sha": sha}, ckpt_path)

    num_workers = cfg["data"]["num_workers"]
    progress = tqdm(total=last_step, initial=step, disable=rank != 0, unit="step",
                    dynamic_ncols=True, desc=cfg["recipe"])
    tick, images_since = time.time(), 0
    model.train()
    while step < last_step:
        epoch, start_batch = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, start_batch)
        loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler,
                            num_workers=num_workers, collate_fn=collate,
                            pin_memory=device.type == "cuda", drop_last=True,
                            # its own generator: creating the iterator would otherwise draw
                            # from the global RNG, and a resumed run creates it mid-epoch
                            generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        for sample in loader:
            if sample["skipped"]:
                corrupt.extend(sample["skipped"])
                if len(corrupt) > cfg["data"]["max_corrupt"]:
                    raise RuntimeError(f"{len(corrupt)} unreadable images (more than "
                                       f"data.max_corrupt); first ones: {corrupt[:5]}")
            lr = learning_rate(step, base_lr=optim_cfg["base_lr"], batch_size=batch,
                               total_steps=total_steps, warmup_steps=warmup_steps,
                               end_lr_ratio=optim_cfg["end_lr_ratio"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            views, locations, labels = to_device(sample)
            # decided on the host copy: reading the device labels would synchronise
            labels = labels if num_classes and bool((sample["labels"] >= 0).all()) else None
            loss, logs = train_step(train_model, optimizer, scaler, run["precision"], views,
                                    locations, labels, guard, step,
                                    strict_check=check_every == 1, hint=nan_hint)
            step += 1
            if step % check_every == 0 or step % run["log_every_steps"] == 0 or \
                    step % run["checkpoint_every_steps"] == 0 or step == last_step:
                guard.check(nan_hint)  # never log or save after a non-finite loss
            images_since += per_rank * world
            progress.update(1)
            if step % run["log_every_steps"] == 0 or step == last_step:
                elapsed = time.time() - tick
                values = {k: float(v) for k, v in logs.items()}
                values.update(lr=lr, epoch=epoch, images_per_s=images_since / max(elapsed, 1e-9),
                              corrupt_images=len(corrupt))
                logger.write(step, values)
                progress.set_postfix(loss=f"{values['loss']:.3f}",
                                     img_s=f"{values['images_per_s']:.0f}")
                tick, images_since = time.time(), 0
            if step % run["checkpoint_every_steps"] == 0 or step == last_step:
                save(step)
            if step >= last_step:
                break
    progress.close()
    logger.close()
    if rank == 0:
        if (out / "metrics.jsonl").is_file():
            plot_losses(out / "metrics.jsonl", out / "loss.png", cfg["recipe"])
        if run["export_backbone"]:
            export_backbone(load_state_file(ckpt_path), out / "backbone.pth", ckpt_path)
        log.info("done: %s (%d steps)%s", ckpt_path, step,
                 f", {len(corrupt)} unreadable images skipped" if corrupt else "")
    return ckpt_path
