"""The pretraining loop: ``train(cfg)``, for one process, torchrun or SLURM, as DINO's and
MAE's: build the run (``pretrain.builder``), ``train_one_epoch`` until the last step, saving
the training state (``pretrain.checkpoint``) every ``run.checkpoint_every_steps``.

Resumption is exact: the checkpoint holds the model, optimiser, GradScaler, step, RNG states
and config; the data order and each sample's augmentation depend only on (seed, epoch, index),
so a run killed at any moment and restarted reaches the same weights as an uninterrupted one.
"""
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .builder import Run, build_run
from .checkpoint import export_backbone, save_training_state
from .weight_files import load_state_file
from .run_logging import log, plot_losses
from .sampler import epoch_seed
from .step import FiniteLossGuard, NonFiniteLossError, train_step  # noqa: F401 (re-exported)


class Throughput:
    """Images per second between two log records."""

    def __init__(self):
        self.tick, self.images = time.time(), 0

    def add(self, images: int) -> None:
        self.images += images

    def read(self) -> float:
        """The rate since the last read, and start counting again."""
        rate = self.images / max(time.time() - self.tick, 1e-9)
        self.tick, self.images = time.time(), 0
        return rate


def _due(step: int, every: int, run: Run) -> bool:
    return step % every == 0 or step == run.last_step


def _nan_hint(run: Run) -> str:
    return (f"; the last good checkpoint {run.checkpoint} is kept. Lower optim.base_lr, or try "
            "run.precision=bf16.")


def epoch_loader(run: Run, epoch: int) -> DataLoader:
    """The batches of ``epoch`` this process has not trained yet (``run.step`` on); the last
    one partial unless data.drop_last (the sampler then yields full batches only)."""
    run.sampler.set_epoch(epoch, run.step - epoch * run.steps_per_epoch)
    return DataLoader(run.dataset, batch_size=run.per_rank, sampler=run.sampler,
                      num_workers=run.cfg["data"]["num_workers"], collate_fn=run.collate,
                      pin_memory=run.device.type == "cuda", drop_last=False,
                      # its own generator: creating the iterator would otherwise draw from
                      # the global RNG, and a resumed run creates it mid-epoch
                      generator=torch.Generator().manual_seed(epoch_seed(run.sampler.seed,
                                                                         epoch)))


def _count_skipped(run: Run, skipped: list[str]) -> None:
    run.corrupt.extend(skipped)
    if len(run.corrupt) > run.cfg["data"]["max_corrupt"]:
        raise RuntimeError(f"{len(run.corrupt)} unreadable images (more than "
                           f"data.max_corrupt); first ones: {run.corrupt[:5]}")


def _set_learning_rate(run: Run) -> float:
    lr = run.schedule.learning_rate(run.step)
    for group in run.parts.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _log(run: Run, logs: dict, lr: float, epoch: int, progress: tqdm, speed: Throughput):
    values = {k: float(v) for k, v in logs.items()}
    values.update(lr=lr, epoch=epoch, images_per_s=speed.read(),
                  corrupt_images=len(run.corrupt))
    run.logger.write(run.step, values)
    progress.set_postfix(loss=f"{values['loss']:.3f}", img_s=f"{values['images_per_s']:.0f}")


def save(run: Run) -> None:
    """The training state at ``run.step``; every process calls it (RNG states are gathered)."""
    p = run.parts
    save_training_state(run.checkpoint, model=p.model, optimizer=p.optimizer, scaler=p.scaler,
                        step=run.step, epoch=run.step // run.steps_per_epoch,
                        sampler={"seed": run.sampler.seed, "batch_size": run.per_rank,
                                 "world_size": run.world, "drop_last": run.sampler.drop_last},
                        corrupt=run.corrupt, cfg=run.cfg, sha=run.sha, rank=run.rank,
                        world=run.world)


def train_one_epoch(run: Run, epoch: int, progress: tqdm, speed: Throughput) -> None:
    """Train from ``run.step`` to the end of ``epoch`` or to ``run.last_step``, logging and
    saving on their schedules; the finiteness guard is read before every log and save."""
    r = run.cfg["run"]
    check_every = r["check_finite_every_steps"]
    for sample in epoch_loader(run, epoch):
        if sample["skipped"]:
            _count_skipped(run, sample["skipped"])
        lr = _set_learning_rate(run)
        views, locations, labels = run.to_device(sample)
        # decided on the host copy: reading the device labels would synchronise
        labels = labels if run.num_classes and bool((sample["labels"] >= 0).all()) else None
        _, logs = train_step(run.train_model, run.parts.optimizer, run.parts.scaler,
                             r["precision"], views, locations, labels, run.guard, run.step,
                             strict_check=check_every == 1, hint=_nan_hint(run))
        run.step += 1
        log_now, save_now = (_due(run.step, r[k], run) for k in ("log_every_steps",
                                                                 "checkpoint_every_steps"))
        if run.step % check_every == 0 or log_now or save_now:
            run.guard.check(_nan_hint(run))  # never log or save after a non-finite loss
        speed.add(len(sample["labels"]) * run.world)  # the epoch's last batch is partial
        progress.update(1)
        if log_now:
            _log(run, logs, lr, epoch, progress, speed)
        if save_now:
            save(run)
        if run.step >= run.last_step:
            break


def _finish(run: Run) -> None:
    """Rank 0: the loss plot, the backbone export and the closing line."""
    if (run.out / "metrics.jsonl").is_file():
        plot_losses(run.out / "metrics.jsonl", run.out / "loss.png", run.cfg["recipe"])
    if run.cfg["run"]["export_backbone"]:
        export_backbone(load_state_file(run.checkpoint), run.out / "backbone.pth",
                        run.checkpoint)
    log.info("done: %s (%d steps)%s", run.checkpoint, run.step,
             f", {len(run.corrupt)} unreadable images skipped" if run.corrupt else "")


def train(cfg: dict, data_root_override: str | None = None) -> Path:
    """Train (or resume) the run in ``cfg["run"]["output_dir"]``; returns its checkpoint path."""
    run = build_run(cfg, data_root_override)
    progress = tqdm(total=run.last_step, initial=run.step, disable=run.rank != 0, unit="step",
                    dynamic_ncols=True, desc=cfg["recipe"])
    speed = Throughput()
    while run.step < run.last_step:
        train_one_epoch(run, run.step // run.steps_per_epoch, progress, speed)
    progress.close()
    run.logger.close()
    if run.rank == 0:
        _finish(run)
    return run.checkpoint
