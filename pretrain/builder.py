"""What a pretraining run is made of, built from a config: the model (placed, wrapped), the
optimiser and GradScaler, the data pipeline, the sampler and the schedule, the logger, the
finiteness guard, and the state restored from the run's checkpoint.

``build_run`` is what ``pretrain.engine.train`` trains; the benchmark
(``pretrain.benchmark``) times the objects of ``build_trainable`` and ``wrap_for_training``,
so it measures what training runs.
"""
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from . import distributed as dist_utils
from .backbones import feature_size
from .checkpoint import read_resume_checkpoint, restore_training_state
from .common.data_root import data_root
from .common.files import write_json
from .common.preflight import check_free_space, check_output_dir
from .common.provenance import git_sha
from .config import check_pretrain_config
from .data import build_dataset
from .model import VICRegL
from .optim import Schedule, build_optimizer, run_schedule, weight_decay_for
from .pipeline import build_pipeline
from .run_logging import RunLogger, log, setup_console
from .sampler import ResumableDistributedSampler
from .step import FiniteLossGuard
from .transforms import EVEN_CROP_PROBS, ODD_CROP_PROBS, MultiCropAugmentation

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


def build_augmentation(cfg: dict) -> MultiCropAugmentation:
    """The recipe's multi-crop augmentation; each crop size's location grid is the side of
    the backbone's local feature map for it (``pretrain.backbones.feature_size``)."""
    d = cfg["data"]
    grids = [feature_size(cfg["model"]["arch"], s) for s in d["size_crops"]]
    even, odd = EVEN_CROP_PROBS, ODD_CROP_PROBS  # (blur, solarize) probabilities
    return MultiCropAugmentation(size_crops=d["size_crops"], num_crops=d["num_crops"],
                                 min_scale_crops=d["min_scale_crops"],
                                 max_scale_crops=d["max_scale_crops"], grid_sizes=grids,
                                 flip_grid=d["flip_grid"],
                                 even_crop_probs=(d["blur_probs"][0], even[1]),
                                 odd_crop_probs=(d["blur_probs"][1], odd[1]))


def build_base_dataset(cfg: dict, root_override: str | None = None):
    d = cfg["data"]
    root = None if d["root"] is None else data_root(root_override) / d["root"]
    list_file = None if d["list_file"] is None else data_root(root_override) / d["list_file"]
    return build_dataset(d["kind"], root=root, list_file=list_file, num_images=d["num_images"],
                         size=d["image_size"], seed=cfg["run"]["seed"], world=d["world"])


def select_device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but no CUDA device is visible")
    return torch.device(f"cuda:{local_rank}" if choice == "cuda" else "cpu")


def place(module: nn.Module, cfg: dict, device: torch.device, world: int = 1) -> nn.Module:
    """``module`` on ``device`` in the run's memory format, in training mode; its BatchNorms
    synchronised across the ``world`` processes when ``run.sync_bn`` (CUDA only)."""
    if world > 1 and cfg["run"]["sync_bn"]:
        if device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        else:
            log.warning("run.sync_bn: SyncBatchNorm needs CUDA; on the CPU BatchNorm "
                        "statistics stay per process")
    module.to(device)
    if cfg["run"]["channels_last"]:
        module.to(memory_format=torch.channels_last)
    return module.train()


@dataclass
class Trainable:
    """What a training step updates: the placed model, its optimiser and GradScaler."""
    model: VICRegL
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


def build_trainable(model: VICRegL, cfg: dict, device: torch.device,
                    world: int = 1) -> Trainable:
    """``model`` placed (``place``), with the recipe's optimiser and GradScaler (enabled for
    fp16 only); the learning rate is set per step by the engine."""
    model = place(model, cfg, device, world)
    o = cfg["optim"]  # weight_decay null: the optimiser's official value
    optimizer = build_optimizer(model, o["optimizer"], o["weight_decay"], fused=o["fused"])
    scaler = torch.amp.GradScaler(device.type, enabled=cfg["run"]["precision"] == "fp16")
    return Trainable(model, optimizer, scaler)


def wrap_for_training(model: nn.Module, cfg: dict, device: torch.device,
                      world: int = 1) -> nn.Module:
    """What the step calls: ``model`` in DistributedDataParallel over several processes
    (after its state is restored: DDP broadcasts rank 0's weights), compiled when
    ``run.compile``."""
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if cfg["run"]["compile"] else model


@dataclass
class Run:
    """Everything the training loop needs; ``step`` and ``corrupt`` advance as it trains."""
    cfg: dict
    rank: int
    world: int
    device: torch.device
    out: Path  # run.output_dir
    sha: str  # the code's git commit, saved in every checkpoint
    parts: Trainable  # parts.model is what is saved
    train_model: nn.Module  # what the step calls (parts.model, wrapped)
    num_classes: int | None  # the online probe's classes; None: no probe
    dataset: Dataset
    collate: Callable
    to_device: Callable  # batch -> (views, locations, labels) on the device
    sampler: ResumableDistributedSampler
    schedule: Schedule  # steps per epoch, the schedule's length, the learning rate per step
    logger: RunLogger
    guard: FiniteLossGuard
    step: int = 0
    corrupt: list[str] = field(default_factory=list)  # unreadable images skipped so far

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT_NAME

    @property
    def per_rank(self) -> int:  # images per process and step
        return self.sampler.batch_size

    @property
    def steps_per_epoch(self) -> int:  # the last one partial unless data.drop_last
        return self.schedule.steps_per_epoch

    @property
    def last_step(self) -> int:  # where this run stops: all epochs, or optim.max_steps
        steps = self.schedule.run_steps
        return min(steps, self.cfg["optim"]["max_steps"] or steps)


def _open_output(cfg: dict, out: Path, sha: str, world: int, device: torch.device) -> None:
    """Rank 0, once every check passed: create the run's folder, write its config, log what
    runs where."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg)
    log.info("git %s | recipe %s | %d process(es) on %s", sha, cfg["recipe"], world, device)
    log.info("config %s", json.dumps(cfg))


def _log_plan(cfg: dict, sampler: ResumableDistributedSampler, schedule: Schedule) -> None:
    o = cfg["optim"]
    log.info("%d images: %d steps per epoch (last batch %d images per process), %d steps in "
             "all; learning-rate schedule %d steps, %d of warm-up; %s, weight decay %g",
             sampler.dataset_size, schedule.steps_per_epoch, sampler.last_batch_size,
             schedule.run_steps, schedule.total_steps, schedule.warmup_steps, o["optimizer"],
             weight_decay_for(o["optimizer"], o["weight_decay"]))


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


# optimiser state per parameter (AdamW: two moments; LARS and SGD: one momentum buffer)
OPTIMIZER_SLOTS = {"adamw": 2, "lars": 1, "sgd": 1}


def checkpoint_bytes(model: nn.Module, optimizer: str) -> int:
    """About the size of the training checkpoint: weights, buffers and optimiser state, plus
    a tenth for the rest (RNG states, config, pickle framing)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return int(1.1 * (params * (1 + OPTIMIZER_SLOTS.get(optimizer, 2)) + buffers))


def build_run(cfg: dict, data_root_override: str | None = None) -> Run:
    """The run of ``cfg`` in this process (one, torchrun or SLURM), resumed from
    ``run.output_dir/checkpoint.pth`` when present. The config, the checkpoint (its config
    too) and its load into the model and optimiser all pass before anything in the folder is
    written; the order of the RNG draws below (model initialisation after seeding, RNG states
    restored last) is part of exact resumption."""
    rank, world, local_rank = dist_utils.init_distributed()
    setup_console(rank)
    check_pretrain_config(cfg, world)
    run = cfg["run"]
    device = select_device(run["device"], local_rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: autotuned kernels (official)
    out = Path(run["output_dir"])
    if rank == 0:  # a file in the way, a read-only disk: named before any input is read
        check_output_dir(out, "run.output_dir")
    ckpt_path = out / CHECKPOINT_NAME
    resume = read_resume_checkpoint(ckpt_path, cfg) if ckpt_path.is_file() else None
    saved_world = (resume or {}).get("sampler", {}).get("world_size", world)
    if rank == 0 and saved_world != world:
        log.warning("resuming a run of %d process(es) with %d: the same batches, but each "
                    "process's random draws (drop path) and BatchNorm statistics differ",
                    saved_world, world)
    sha = git_sha()
    _seed(run["seed"] + rank)
    base = build_base_dataset(cfg, data_root_override)
    num_classes = getattr(base, "num_classes", None) if run["probe"] else None
    model = build_model(cfg, num_classes)
    dataset, collate, to_device = build_pipeline(
        cfg["data"]["pipeline"], base, build_augmentation(cfg), run["seed"],
        device, run["channels_last"], cfg["data"]["max_corrupt"])
    drop_last = cfg["data"]["drop_last"]
    # len(dataset): the memory pipeline leaves unreadable images out at load time
    sampler = ResumableDistributedSampler(len(dataset), cfg["optim"]["batch_size"] // world,
                                          rank, world, run["seed"], drop_last=drop_last)
    schedule = run_schedule(cfg["optim"], len(dataset), world, drop_last)
    if rank == 0:
        _log_plan(cfg, sampler, schedule)
    parts = build_trainable(model, cfg, device, world)
    if rank == 0:  # a disk too small for the checkpoint would fail at the first save
        check_free_space(out, checkpoint_bytes(parts.model, cfg["optim"]["optimizer"]),
                         "run.output_dir")
    step, corrupt = 0, list(getattr(dataset, "skipped", []))  # memory: left out at load
    if resume is not None:
        step, corrupt = restore_training_state(resume, ckpt_path, model=parts.model,
                                               optimizer=parts.optimizer, scaler=parts.scaler,
                                               rank=rank)
    if rank == 0:  # nothing in the folder changed before this point
        _open_output(cfg, out, sha, world, device)
    train_model = wrap_for_training(parts.model, cfg, device, world)
    logger = RunLogger(out, enabled=rank == 0)
    logger.truncate_after(step)
    return Run(cfg=cfg, rank=rank, world=world, device=device, out=out, sha=sha, parts=parts,
               train_model=train_model, num_classes=num_classes, dataset=dataset,
               collate=collate, to_device=to_device, sampler=sampler, schedule=schedule,
               logger=logger, guard=FiniteLossGuard(device), step=step, corrupt=corrupt)
