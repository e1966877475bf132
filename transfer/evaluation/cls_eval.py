"""``evaluate(...)``: one global evaluation run (k-NN or linear) -> ``WORK_DIR/metrics.json``.

The in-process API behind tools/cls_eval.py (one process, torchrun, or a SLURM task: the
process group comes from the launcher's environment variables, as in pretraining).
"""
import math
import time
from pathlib import Path

import torch
import torchvision

from pretrain.distributed import init_distributed
from transfer.evaluation import classification as cls
from transfer.evaluation.linear_probe import REFERENCE as LINEAR_REFERENCE
from transfer.evaluation.linear_probe import LinearRecipe, train_linear
from transfer.evaluation.dense_retrieval import choose_subset
from transfer.evaluation.knn import NonFiniteError, check_finite
from transfer.metrics import write_metrics
from transfer.seed_runs import planned_runs

PROTOCOLS = ("knn", "linear")


def _device(local_rank: int) -> torch.device:
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def _common_settings(seed: int, world: int, device: torch.device) -> dict:
    return {"seed": seed, "processes": world, "gpus": world if device.type == "cuda" else 0,
            "precision": "fp32", "norm": "frozen",
            "frameworks": {"torch": torch.__version__.split("+")[0],
                           "torchvision": torchvision.__version__.split("+")[0]}}


def _knn_features(backbone, split, device, rank, world, batch, workers) -> dict:
    """Pooled features and labels of both splits, gathered on every process."""
    feats = {}
    for name in ("train", "val"):
        part = cls.shard(getattr(split, name), rank, world)
        f, y = cls.pooled_features(backbone, part, device, batch, workers, f"features {name}",
                                   show=rank == 0)
        feats[name] = (cls.gather_shards(f.to(device), world),
                       cls.gather_shards(y.to(device), world))
    return feats


def _knn_scores(feats: dict, num_classes: int, k: int, temperature: float, fraction: float,
                seed: int) -> dict:
    """Top-1/5 of the weighted vote over a ``seed``-drawn ``fraction`` of the training bank
    (all of it at 1.0, the reference: the seed then changes nothing)."""
    (train_f, train_y), (val_f, val_y) = feats["train"], feats["val"]
    if fraction < 1:
        keep = torch.tensor(choose_subset(len(train_y), fraction, seed), device=train_y.device)
        train_f, train_y = train_f[keep], train_y[keep]
    scores = cls.knn_classify(train_f, train_y, val_f, num_classes, k, temperature)
    return cls.accuracy_percent(cls.topk_correct(scores, val_y), len(val_y))


def evaluate(*, arch: str, backbone: str, data_root: str | Path, work_dir: str | Path,
             protocol: str = "knn", dataset: str = "imagenet", seed: int = 0,
             recipe: LinearRecipe | None = None, k: int = 20, temperature: float = 0.07,
             batch_size: int | None = None, memory_fraction: float = 1.0,
             seeds: list[int] | None = None) -> dict[int, dict] | None:
    """Run the evaluation once with ``seed`` into ``work_dir``, or once per seed of ``seeds``
    into ``work_dir/seed<k>`` (data, backbone and, for k-NN, the features paid once; finished
    seeds skipped). Returns {seed: metrics} on rank 0, None on the other ranks."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"--memory-fraction must be in (0, 1], got {memory_fraction}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"--k {k}: expected an integer >= 1")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"--temperature {temperature}: expected a finite number > 0")
    recipe = recipe or LinearRecipe()
    rank, world, local_rank = init_distributed()
    device = _device(local_rank)
    runs = planned_runs(work_dir, seed, seeds)
    train_tf = (cls.train_transform(recipe.crop) if protocol == "linear"
                else cls.eval_transform(recipe.crop, recipe.resize))
    split = cls.image_folders(data_root, dataset, train_tf,
                              cls.eval_transform(recipe.crop, recipe.resize))
    results, features = {}, {}  # features: weights sha256 -> k-NN features
    for run_seed, folder in runs:
        start = time.time()
        model, weights = cls.frozen_backbone(arch, backbone, device, run_seed)
        settings = _common_settings(run_seed, world, device)
        extra = {"num_train": len(split.train), "num_val": len(split.val),
                 "num_classes": split.num_classes}
        if protocol == "knn":
            if weights.sha256 not in features:
                batch = max(1, (batch_size or recipe.batch_size) // world)
                features = {weights.sha256: _knn_features(model, split, device, rank, world,
                                                          batch, recipe.workers)}
                for name, (f, _) in features[weights.sha256].items():
                    check_finite(f, f"backbone {weights.source}: pooled features of the {name} "
                                    "images")
            metrics = _knn_scores(features[weights.sha256], split.num_classes, k, temperature,
                                  memory_fraction, run_seed)
            settings.update(k=k, temperature=temperature, crop=recipe.crop,
                            resize=recipe.resize, features="pooled",
                            memory_fraction=memory_fraction)
            reference = cls.KNN_REFERENCE
        else:
            try:
                metrics, history = _run_linear(model, weights, split, recipe, folder, device,
                                               dataset, run_seed, rank, world)
            except NonFiniteError as exc:
                raise NonFiniteError(f"backbone {weights.source}: {exc}") from None
            settings.update(recipe.settings(), optimizer="sgd", schedule="cosine_per_epoch")
            extra.update(history=history, best_top1=max(h["top1"] for h in history),
                         best_top5=max(h["top5"] for h in history))
            reference = LINEAR_REFERENCE
        if rank == 0:
            write_metrics(Path(folder) / "metrics.json", task="classification",
                          dataset=dataset, protocol=protocol,
                          config=f"tools/cls_eval.py --protocol {protocol}",
                          backbone=weights.info(), metrics=metrics,
                          wall_s=time.time() - start, gpus=settings["gpus"],
                          settings=settings, reference=reference, extra=extra)
        results[run_seed] = metrics
    return results if rank == 0 else None


def _run_linear(model, weights, split, recipe, work_dir, device, dataset, seed, rank, world
                ) -> tuple[dict, list[dict]]:
    fingerprint = {"arch": weights.arch, "sha256": weights.sha256, "dataset": dataset,
                   "seed": seed, **recipe.settings()}
    history = train_linear(model, split, recipe, work_dir, device, fingerprint, seed, rank,
                           world)
    return {"top1": history[-1]["top1"], "top5": history[-1]["top5"]}, history
