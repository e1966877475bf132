"""Global (image-level) evaluation of a frozen backbone: data, pooled features, weighted k-NN.

Reads ImageFolder ``ROOT/<dataset>/{train,val}/<class>/<image>``; the backbone is frozen and
its global feature is the official one (``backbone(x)[1]``: global average pool of the last
stage; for ConvNeXt the mean of the final-LayerNorm tokens), as the official evaluate.py uses.

k-NN protocol (DINO, Caron et al. 2021, eval_knn.py): features L2-normalised, cosine
similarity, the k = 20 nearest training images vote for their class with weight
exp(sim / 0.07), votes summed per class; top-1 / top-5 of the summed votes. Train and val
images both go through the evaluation transform (resize 256, centre crop 224).
The linear protocol is in ``transfer/evaluation/linear_probe.py``.
"""
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms
from tqdm import tqdm

from pretrain.backbones import build_backbone
from pretrain.data import scan_image_folder
from transfer.datasets import IMAGEFOLDER_SPLITS
from transfer.evaluation.knn import l2_normalise, topk_cosine
from transfer.weights import BackboneWeights, read_backbone

# torchvision's ImageNet statistics, as the official evaluate.py normalises (std 0.229 here,
# unlike the pretraining augmentation's 0.228).
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KNN_REFERENCE = {"k": 20, "temperature": 0.07, "crop": 224, "resize": 256,
                 "features": "pooled", "precision": "fp32", "memory_fraction": 1.0}
LAYOUT = "ROOT/<dataset>/train/<class>/<image> and ROOT/<dataset>/val/<class>/<image>"


@dataclass
class Split:
    train: datasets.ImageFolder
    val: datasets.ImageFolder

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def eval_transform(crop: int, resize: int) -> transforms.Compose:
    """Resize the short side to ``resize``, centre crop ``crop``, normalise (official val)."""
    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def train_transform(crop: int) -> transforms.Compose:
    """RandomResizedCrop (torchvision defaults: scale 0.08-1), flip, normalise (official)."""
    return transforms.Compose([transforms.RandomResizedCrop(crop),
                               transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


class ImageFolderOnce(datasets.ImageFolder):
    """torchvision's ImageFolder listing each real file once (``scan_image_folder``, as the
    pretraining's): a symbolic link loop made its scan list images again, or hang."""

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None,
                     allow_empty=False):
        return scan_image_folder(str(directory), class_to_idx)


def _folder(path: Path, transform) -> datasets.ImageFolder:
    if not path.is_dir():
        raise FileNotFoundError(f"missing image folder {path}; expected {LAYOUT}")
    try:
        return ImageFolderOnce(str(path), transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise FileNotFoundError(f"image folder {path}: {exc}; expected {LAYOUT}") from exc


def image_folders(root: str | Path, dataset: str, train_tf, val_tf) -> Split:
    """The train and val ImageFolders of ``root/dataset``; their class folders must agree."""
    train, val = (Path(root) / dataset / split for split in IMAGEFOLDER_SPLITS)
    base = train.parent
    split = Split(_folder(train, train_tf), _folder(val, val_tf))
    if split.train.classes != split.val.classes:
        missing = sorted(set(split.train.classes) ^ set(split.val.classes))
        raise ValueError(f"{base}: train and val class folders differ ({missing[:5]}); the "
                         "labels are the sorted folder names, so both need the same classes")
    return split


def frozen_backbone(arch: str, source: str, device: torch.device, seed: int = 0
                    ) -> tuple[torch.nn.Module, BackboneWeights]:
    """The backbone holding ``source`` (strictly read), in eval mode, without gradients."""
    weights = read_backbone(source, arch, seed=seed)
    model = build_backbone(arch)
    model.load_state_dict(weights.state_dict, strict=True)
    model.eval().requires_grad_(False)
    return model.to(device), weights


def shard(dataset, rank: int, world: int) -> Subset:
    """Every ``world``-th sample from ``rank``: no padding, so no image counts twice."""
    return Subset(dataset, list(range(rank, len(dataset), world)))


@torch.no_grad()
def pooled_features(backbone: torch.nn.Module, dataset, device: torch.device, batch_size: int,
                    workers: int, desc: str, show: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, C) float32 on the CPU, labels (N,)) of ``dataset``, in dataset order."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False,
                        pin_memory=device.type == "cuda")
    feats, labels = [], []
    for images, target in tqdm(loader, desc=desc, disable=not show, dynamic_ncols=True):
        feats.append(backbone(images.to(device, non_blocking=True))[1].float().cpu())
        labels.append(target)
    return torch.cat(feats), torch.cat(labels)


def gather_shards(x: torch.Tensor, world: int) -> torch.Tensor:
    """Undo ``shard``: rows of rank r are samples r, r + world, ...; returns dataset order.

    Shards differ in length by at most one, so each is padded to the longest for all_gather."""
    if world == 1:
        return x
    n = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:len(x)] = x
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.empty((sum(int(s.item()) for s in sizes), *x.shape[1:]), dtype=x.dtype,
                      device=x.device)
    for r, (part, size) in enumerate(zip(parts, sizes)):
        out[r::world] = part[:int(size.item())]
    return out


def knn_vote(sims: torch.Tensor, neighbour_labels: torch.Tensor, num_classes: int,
             temperature: float) -> torch.Tensor:
    """Class scores (Q, C): sum over the neighbours of exp(sim / T) for their class (DINO)."""
    weights = (sims / temperature).exp()
    scores = torch.zeros(len(sims), num_classes, dtype=weights.dtype, device=sims.device)
    return scores.scatter_add_(1, neighbour_labels, weights)


def topk_correct(scores: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[int, int]:
    """Number of rows whose target is among the ``k`` highest scores, for each k."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = top == targets.view(-1, 1)
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


def knn_classify(train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor,
                 num_classes: int, k: int = 20, temperature: float = 0.07,
                 bank_chunk: int = 65536) -> torch.Tensor:
    """Weighted k-NN class scores (Q, C) of ``val_f`` against the bank ``train_f``."""
    sims, idx = topk_cosine(l2_normalise(val_f), l2_normalise(train_f), k, bank_chunk)
    return knn_vote(sims, train_y.to(idx.device)[idx], num_classes, temperature)


def accuracy_percent(correct: dict[int, int], total: int) -> dict[str, float]:
    return {f"top{k}": round(100.0 * c / total, 3) for k, c in correct.items()}
