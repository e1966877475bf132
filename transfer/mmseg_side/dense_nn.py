"""``evaluate(config, ...)``: one dense nearest-neighbour run -> ``WORK_DIR/metrics.json``.

The in-process API behind tools/dense_nn_eval.py: the pure-torch method is
transfer/evaluation/dense_retrieval.py, the mmseg-read data transfer/mmseg_side/dense_data.py.
One process (GPU if present); a rerun recomputes everything (training-free: the cost is one
forward pass over the memory images and the val images, plus the search).
"""
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from transfer.evaluation import dense_retrieval as dr
from transfer.evaluation.classification import frozen_backbone
from transfer.evaluation.knn import NonFiniteError, check_finite
from transfer.metrics import write_metrics
from transfer.seed_runs import planned_runs

from . import dense_data
from .layouts import check_dataset


@dataclass
class DenseNNSettings:
    k: int = 30
    temperature: float = 0.02
    memory_fraction: float = 1.0
    memory_epochs: int = 1  # passes over the memory images (augmented differently each)
    memory_size: int | None = None  # cap on memory entries; None keeps every labelled cell
    label_pooling: str = "soft"
    features: str = "last"
    augment: bool = True
    batch_size: int = 8
    workers: int = 2

    def check(self) -> None:
        """``ValueError`` naming the option of a meaningless value (tools/dense_nn_eval.py
        refuses them while parsing; this guards the in-process API)."""
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"--k {self.k}: expected an integer >= 1")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"--temperature {self.temperature}: expected a finite number > 0")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(f"--memory-fraction {self.memory_fraction}: expected a number in "
                             "(0, 1]")

    def record(self) -> dict:
        s = asdict(self)
        for key in ("batch_size", "workers"):  # do not move a number
            s.pop(key)
        return s


REFERENCE = DenseNNSettings().record()


def _features(model, norm, pairs, features: str, device) -> list[torch.Tensor]:
    """(D, h, w) features of each image; stacked when the batch shares one size."""
    images = [norm(img) for img, _ in pairs]
    if len({tuple(i.shape) for i in images}) == 1:
        out = list(dr.local_features(model, torch.stack(images).to(device), features))
    else:
        out = [dr.local_features(model, i[None].to(device), features)[0] for i in images]
    for f in out:
        check_finite(f, f"local features ({features})")
    return out


@torch.no_grad()
def build_memory(model, dataset, indices: list[int], norm, s: DenseNNSettings, num_classes: int,
                 ignore_index: int, device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory bank: (normalised features (M, D), labels (M, C)) on ``device``."""
    per_image = None
    if s.memory_size is not None:
        per_image = max(1, s.memory_size // (len(indices) * s.memory_epochs))
    generator = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    bar = tqdm(total=len(indices) * s.memory_epochs, desc="memory", unit="img",
               dynamic_ncols=True)
    for epoch in range(s.memory_epochs):
        for pairs in dense_data.loader(dataset, indices, s.batch_size, s.workers,
                                       seed * 1000 + epoch):
            for f, (_, label) in zip(_features(model, norm, pairs, s.features, device), pairs):
                f, y = dr.memory_entries(f, label.to(device), num_classes, ignore_index,
                                         s.label_pooling, per_image, generator)
                feats.append(f.half() if device.type == "cuda" else f)  # halves GPU memory
                labels.append(y.half() if device.type == "cuda" else y)
            bar.update(len(pairs))
    bar.close()
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def segment_val(model, dataset, bank, bank_labels, norm, s: DenseNNSettings, num_classes: int,
                ignore_index: int, device) -> torch.Tensor:
    """The (C, C) confusion matrix of the dense k-NN predictions over the val set."""
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for pairs in tqdm(dense_data.loader(dataset, None, s.batch_size, s.workers, 0),
                      desc="val", unit="batch", dynamic_ncols=True):
        for f, (_, label) in zip(_features(model, norm, pairs, s.features, device), pairs):
            pred = dr.predict(f.to(bank.dtype), bank, bank_labels, tuple(label.shape), s.k,
                              s.temperature)
            conf += dr.confusion(pred.cpu(), label, num_classes, ignore_index)
    return conf


def _settings(s: DenseNNSettings, cfg, config: str, seed: int, memory: int, device) -> dict:
    import mmseg

    return {**s.record(), "memory_entries": memory, "crop": list(cfg.crop_size), "seed": seed,
            "config_sha256": hashlib.sha256(Path(config).read_bytes()).hexdigest(),
            "processes": 1, "gpus": int(device.type == "cuda"), "norm": "frozen",
            "precision": "fp32",
            "bank_dtype": "float16" if device.type == "cuda" else "float32",
            "frameworks": {"torch": torch.__version__.split("+")[0], "mmseg": mmseg.__version__}}


def evaluate(config: str, *, arch: str, backbone: str, data_root: str, work_dir: str,
             seed: int = 0, settings: DenseNNSettings | None = None,
             crop_size: int | None = None, cfg_options: dict | None = None,
             seeds: list[int] | None = None) -> dict[int, dict]:
    """Run the dense k-NN evaluation of ``backbone`` on ``config``'s dataset: once with
    ``seed`` into ``work_dir``, or once per seed of ``seeds`` into ``work_dir/seed<k>`` (the
    config, datasets and checks paid once; finished seeds skipped). Returns {seed: metrics}."""
    runs = planned_runs(work_dir, seed, seeds)
    if not runs:
        return {}
    s = settings or DenseNNSettings()
    s.check()
    cfg = dense_data.load_config(config, data_root, crop_size, cfg_options)
    print(check_dataset(cfg.dataset_name, data_root))  # a wrong root fails here, by name
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train = dense_data.build_split(cfg, "train", s.augment)
    val = dense_data.build_split(cfg, "val")
    classes, ignore_index = dense_data.dataset_meta(val)
    norm = dense_data.Normaliser(cfg.model.data_preprocessor)
    results = {}
    for run_seed, folder in runs:
        start = time.time()
        model, weights = frozen_backbone(arch, backbone, device, run_seed)
        indices = dr.choose_subset(len(train), s.memory_fraction, run_seed)
        try:
            bank, labels = build_memory(model, train, indices, norm, s, len(classes),
                                        ignore_index, device, run_seed)
            conf = segment_val(model, val, bank, labels, norm, s, len(classes), ignore_index,
                               device)
        except NonFiniteError as exc:
            raise NonFiniteError(f"backbone {weights.source}: {exc}") from None
        result = dr.segmentation_metrics(conf, classes)
        per_class_acc = result.pop("per_class_acc")
        write_metrics(folder / "metrics.json", task="dense_retrieval",
                      dataset=cfg.dataset_name, protocol="dense_nn", config=config,
                      backbone=weights.info(), metrics=result, wall_s=time.time() - start,
                      gpus=int(device.type == "cuda"),
                      settings=_settings(s, cfg, config, run_seed, len(bank), device),
                      reference={**REFERENCE, "crop": cfg.reference_crop, "precision": "fp32"},
                      extra={"per_class_acc": per_class_acc, "memory_images": len(indices),
                             "train_images": len(train), "val_images": len(val)})
        results[run_seed] = result
    return results
