"""``evaluate(...)``: one global evaluation run (k-NN or linear) -> ``WORK_DIR/metrics.json``.

The in-process API behind tools/cls_eval.py (one process, torchrun, or a SLURM task: the
process group comes from the launcher's environment variables, as in pretraining).
"""
import time
from pathlib import Path

import torch
import torchvision

from pretrain.distributed import init_distributed
from transfer.evaluation import classification as cls
from transfer.evaluation.linear_probe import REFERENCE as LINEAR_REFERENCE
from transfer.evaluation.linear_probe import LinearRecipe, train_linear
from transfer.metrics import write_metrics

PROTOCOLS = ("knn", "linear")


def _device(local_rank: int) -> torch.device:
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def _common_settings(seed: int, world: int, device: torch.device) -> dict:
    return {"seed": seed, "processes": world, "gpus": world if device.type == "cuda" else 0,
            "precision": "fp32", "norm": "frozen",
            "frameworks": {"torch": torch.__version__.split("+")[0],
                           "torchvision": torchvision.__version__.split("+")[0]}}


def _run_knn(backbone, split, device, rank, world, k, temperature, batch, workers) -> dict:
    feats = {}
    for name in ("train", "val"):
        part = cls.shard(getattr(split, name), rank, world)
        f, y = cls.pooled_features(backbone, part, device, batch, workers, f"features {name}",
                                   show=rank == 0)
        feats[name] = (cls.gather_shards(f.to(device), world),
                       cls.gather_shards(y.to(device), world))
    (train_f, train_y), (val_f, val_y) = feats["train"], feats["val"]
    scores = cls.knn_classify(train_f, train_y, val_f, split.num_classes, k, temperature)
    return cls.accuracy_percent(cls.topk_correct(scores, val_y), len(val_y))


def evaluate(*, arch: str, backbone: str, data_root: str | Path, work_dir: str | Path,
             protocol: str = "knn", dataset: str = "imagenet", seed: int = 0,
             recipe: LinearRecipe | None = None, k: int = 20, temperature: float = 0.07,
             batch_size: int | None = None) -> dict | None:
    """Run one evaluation; returns the metrics (rank 0; None on the other ranks)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    recipe = recipe or LinearRecipe()
    rank, world, local_rank = init_distributed()
    device = _device(local_rank)
    start = time.time()
    train_tf = (cls.train_transform(recipe.crop) if protocol == "linear"
                else cls.eval_transform(recipe.crop, recipe.resize))
    split = cls.image_folders(data_root, dataset, train_tf,
                              cls.eval_transform(recipe.crop, recipe.resize))
    model, weights = cls.frozen_backbone(arch, backbone, device, seed)
    settings = _common_settings(seed, world, device)
    extra = {"num_train": len(split.train), "num_val": len(split.val),
             "num_classes": split.num_classes}
    if protocol == "knn":
        batch = batch_size or recipe.batch_size
        metrics = _run_knn(model, split, device, rank, world, k, temperature,
                           max(1, batch // world), recipe.workers)
        settings.update(k=k, temperature=temperature, crop=recipe.crop, resize=recipe.resize,
                        features="pooled")
        reference = cls.KNN_REFERENCE
    else:
        fingerprint = {"arch": arch, "sha256": weights.sha256, "dataset": dataset,
                       "seed": seed, **recipe.settings()}
        history = train_linear(model, split, recipe, work_dir, device, fingerprint, seed,
                               rank, world)
        metrics = {"top1": history[-1]["top1"], "top5": history[-1]["top5"]}
        settings.update(recipe.settings(), optimizer="sgd", schedule="cosine_per_epoch")
        extra.update(history=history, best_top1=max(h["top1"] for h in history),
                     best_top5=max(h["top5"] for h in history))
        reference = LINEAR_REFERENCE
    if rank != 0:
        return None
    write_metrics(Path(work_dir) / "metrics.json", task="classification", dataset=dataset,
                  protocol=protocol, config=f"tools/cls_eval.py --protocol {protocol}",
                  backbone=weights.info(), metrics=metrics, wall_s=time.time() - start,
                  gpus=settings["gpus"], settings=settings, reference=reference, extra=extra)
    return metrics
