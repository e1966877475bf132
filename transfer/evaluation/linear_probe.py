"""Linear classification on a frozen backbone: the official VICRegL evaluate.py recipe.

Recipe (facebookresearch/VICRegL evaluate.py, ``--weights freeze``; the defaults here): a
``Linear(C, classes)`` head (weight N(0, 0.01), bias 0) on the pooled feature of the frozen
backbone in eval mode; SGD momentum 0.9, lr 0.3 (not scaled with the batch), weight decay
1e-6, cosine annealing to 0 over the epochs stepped once per epoch, 100 epochs, total batch
256 split over the processes; train images RandomResizedCrop 224 + horizontal flip, val
images resize 256 + centre crop 224, normalised with mean (0.485, 0.456, 0.406), std (0.229,
0.224, 0.225); fp32. Validation after every epoch.

Deviations: the official script reports the best accuracy over the epochs (model selection on
the validation set); we report the last epoch's as ``top1``/``top5`` and keep the best in the
history. The official script resumes but never checks what it resumes; our checkpoint carries
a fingerprint (architecture, backbone sha256, recipe) and a mismatch is an error.

The checkpoint (``linear_checkpoint.pth`` in the work dir) is written atomically after every
epoch; a restarted run continues after the last finished epoch and, because the data order
and augmentation are seeded by (seed, epoch), reaches the same head as an uninterrupted run.
"""
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from pretrain.checkpoint import atomic_save
from pretrain.weight_files import load_state_file
from transfer.evaluation.classification import Split, shard, topk_correct
from transfer.evaluation.knn import NonFiniteError

CHECKPOINT = "linear_checkpoint.pth"


@dataclass
class LinearRecipe:
    epochs: int = 100
    batch_size: int = 256  # total over all processes
    lr: float = 0.3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    crop: int = 224
    resize: int = 256
    workers: int = 8

    def settings(self) -> dict:
        """The recipe's keys as metrics.json names them (workers do not move a number)."""
        s = asdict(self)
        s.pop("workers")
        s["total_batch"] = s.pop("batch_size")
        return s


REFERENCE = {**LinearRecipe().settings(), "precision": "fp32", "norm": "frozen",
             "optimizer": "sgd", "schedule": "cosine_per_epoch"}


def build_head(in_dim: int, num_classes: int) -> nn.Linear:
    head = nn.Linear(in_dim, num_classes)
    head.weight.data.normal_(mean=0.0, std=0.01)
    head.bias.data.zero_()
    return head


def _load_state(path: Path, fingerprint: dict, head, optimizer, scheduler) -> tuple[int, list]:
    """Resume from ``path`` if it exists: returns (next epoch, history)."""
    if not path.is_file():
        return 0, []
    state = load_state_file(path)
    if state.get("fingerprint") != fingerprint:
        theirs = state.get("fingerprint", {})
        diff = sorted(k for k in set(fingerprint) | set(theirs)
                      if fingerprint.get(k) != theirs.get(k))
        raise ValueError(f"{path} belongs to another run (differs in {diff}); use another "
                         "--work-dir or delete the checkpoint to start over")
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], state["history"]


def _train_epoch(backbone, head, loader, optimizer, device, progress) -> float:
    criterion, total, n = nn.CrossEntropyLoss(), 0.0, 0
    for images, target in loader:
        with torch.no_grad():
            feats = backbone(images.to(device, non_blocking=True))[1]
        loss = criterion(head(feats.float()), target.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):  # NaN features, or an --lr that diverges
            raise NonFiniteError(f"the linear probe's training loss is {value} at step {n + 1} "
                                 "of this epoch; expected a finite loss (check the backbone's "
                                 "features and --lr)")
        total, n = total + value, n + 1
        progress.update(1)
    return total / max(n, 1)


@torch.no_grad()
def evaluate(backbone, head, dataset, device, batch: int, workers: int, rank: int,
             world: int) -> tuple[dict[int, int], int]:
    """Top-1/top-5 hit counts over the whole val set (sharded, summed over processes)."""
    loader = DataLoader(shard(dataset, rank, world), batch_size=batch, num_workers=workers)
    counts = torch.zeros(3, dtype=torch.long, device=device)  # top1, top5, total
    for images, target in loader:
        scores = head(backbone(images.to(device, non_blocking=True))[1].float())
        hits = topk_correct(scores, target.to(device))
        counts += torch.tensor([hits[1], hits[5], len(target)], device=device)
    if world > 1:
        dist.all_reduce(counts)
    return {1: int(counts[0]), 5: int(counts[1])}, int(counts[2])


def _loader(split: Split, recipe: LinearRecipe, epoch: int, seed: int, rank: int, world: int):
    sampler = DistributedSampler(split.train, num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed)
    sampler.set_epoch(epoch)
    return DataLoader(split.train, batch_size=recipe.batch_size // world, sampler=sampler,
                      num_workers=recipe.workers, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def train_linear(backbone, split: Split, recipe: LinearRecipe, work_dir: str | Path,
                 device: torch.device, fingerprint: dict, seed: int = 0, rank: int = 0,
                 world: int = 1) -> list[dict]:
    """Train (or resume) the probe in ``work_dir``; returns the per-epoch history."""
    if recipe.batch_size % world:
        raise ValueError(f"--batch-size {recipe.batch_size} does not split over {world} processes")
    torch.manual_seed(seed)
    head = build_head(backbone.num_features, split.num_classes).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs)
    path = Path(work_dir) / CHECKPOINT
    start, history = _load_state(path, fingerprint, head, optimizer, scheduler)
    model = nn.parallel.DistributedDataParallel(head) if world > 1 else head
    steps = len(_loader(split, recipe, 0, seed, rank, world))
    progress = tqdm(total=recipe.epochs * steps, initial=start * steps, disable=rank != 0,
                    desc="linear probe", unit="step", dynamic_ncols=True)
    for epoch in range(start, recipe.epochs):
        torch.manual_seed(seed * 1_000_003 + epoch)  # augmentation in the main process
        loss = _train_epoch(backbone, model, _loader(split, recipe, epoch, seed, rank, world),
                            optimizer, device, progress)
        correct, total = evaluate(backbone, head, split.val, device, recipe.batch_size // world,
                                  recipe.workers, rank, world)
        history.append({"epoch": epoch + 1, "loss": round(loss, 5),
                        "lr": optimizer.param_groups[0]["lr"],
                        "top1": round(100.0 * correct[1] / total, 3),
                        "top5": round(100.0 * correct[5] / total, 3)})
        scheduler.step()
        progress.set_postfix(top1=history[-1]["top1"], loss=f"{loss:.3f}")
        if rank == 0:
            atomic_save({"epoch": epoch + 1, "head": head.state_dict(), "history": history,
                         "optimizer": optimizer.state_dict(), "fingerprint": fingerprint,
                         "scheduler": scheduler.state_dict()}, path)
        if world > 1:
            dist.barrier()
    progress.close()
    return history
