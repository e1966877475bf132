"""Training-free dense nearest-neighbour segmentation (Hummingbird; Balazevic et al., NeurIPS
2023, "Towards In-context Scene Understanding"; settings of open-hummingbird-eval). Pure torch.

1. Memory: the frozen backbone's local features of (a seeded fraction of) the training
   images, one entry per feature-grid cell, with the cell's label *distribution* (the share of
   each class among its labelled pixels; "soft", as open-hummingbird-eval stores the mean of
   the one-hot pixels) or its majority class one-hot ("majority"). Cells without any labelled
   pixel carry no label and are left out. Soft labels keep mixed cells at object boundaries
   honest: a 32-pixel cell is often half object, half background.
2. Query: each validation cell takes its k = 30 most cosine-similar memory entries (exact
   search, transfer/evaluation/knn.py) and the softmax(sim / 0.02)-weighted mean of their labels.
3. The class scores are upsampled (bilinear) to the label map's size, argmax, and scored with
   a confusion matrix; mIoU/mAcc/aAcc have mmseg IoUMetric's semantics (ignore index
   excluded; a class absent from both ground truth and prediction has IoU null, a class absent
   from the ground truth Acc null; means over the non-null classes).
"""
import math

import torch
import torch.nn.functional as F

from transfer.evaluation.knn import l2_normalise, topk_cosine

FEATURES = ("last", "stage1", "stage2", "stage3", "stage4", "concat")
LABEL_POOLING = ("soft", "majority")


def local_features(backbone: torch.nn.Module, images: torch.Tensor, features: str = "last"
                   ) -> torch.Tensor:
    """(B, D, h, w) frozen local features. ``last``: the backbone's local features as VICRegL's
    local criterion sees them (ResNet layer4; ConvNeXt last stage after its final LayerNorm);
    ``stageN``: raw stage N output (what the segmentation adapters get); ``concat``: the four
    stages resized to stage 1's stride-4 grid and concatenated, as the ConvNeXt linear
    segmentation protocol feeds its head."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    stages = backbone.forward_stages(images)
    if features.startswith("stage"):
        return stages[int(features[-1]) - 1]
    if features == "concat":
        size = stages[0].shape[-2:]
        return torch.cat([stages[0]] + [F.interpolate(s, size=size, mode="bilinear",
                                                      align_corners=False) for s in stages[1:]], 1)
    last = stages[-1]
    norm = getattr(backbone, "norm", None)
    if isinstance(norm, torch.nn.LayerNorm):  # ConvNeXt: the official local features
        last = norm(last.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return last


def pool_labels(label: torch.Tensor, grid: tuple[int, int], num_classes: int,
                ignore_index: int, mode: str = "soft") -> tuple[torch.Tensor, torch.Tensor]:
    """A (H, W) label map -> per-cell labels (h*w, C) of the (h, w) feature grid and a (h*w,)
    mask of the cells holding at least one labelled pixel. A cell covers the pixels adaptive
    average pooling assigns it (exact blocks when H, W are multiples of h, w)."""
    if mode not in LABEL_POOLING:
        raise ValueError(f"label pooling must be one of {LABEL_POOLING}, got {mode!r}")
    label = label.long()
    valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
    onehot = F.one_hot(torch.where(valid, label, num_classes), num_classes + 1)
    share = F.adaptive_avg_pool2d(onehot.permute(2, 0, 1)[None].float(), grid)[0]
    share = share[:num_classes].flatten(1).T  # (h*w, C): fraction of the cell's pixels
    labelled = share.sum(1)
    keep = labelled > 0
    soft = share / labelled.clamp_min(1e-12)[:, None]
    if mode == "majority":
        soft = F.one_hot(soft.argmax(1), num_classes).float()
    return soft * keep[:, None], keep


def rare_first(cell_labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``count`` cells of one image, preferring cells whose classes are rare in the
    image (open-hummingbird-eval's bounded-memory sampling: score = summed image frequency of
    the cell's classes times uniform noise, keep the lowest)."""
    present = cell_labels > 0
    frequency = present.sum(0).float()
    score = (present.float() * frequency).sum(1)
    score = score * torch.rand(len(score), generator=generator)
    return score.topk(min(count, len(score)), largest=False).indices


def vote(sims: torch.Tensor, neighbour_labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """(Q, C) label estimate: softmax over the k neighbours of sim / T, times their labels."""
    weights = torch.softmax(sims / temperature, dim=1)
    return torch.einsum("qk,qkc->qc", weights, neighbour_labels)


def predict(query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
            out_size: tuple[int, int], k: int = 30, temperature: float = 0.02) -> torch.Tensor:
    """Segment one image from its (D, h, w) features: the (H, W) argmax of the voted class
    scores, upsampled bilinearly to ``out_size``. ``bank`` rows must be L2-normalised."""
    d, h, w = query.shape
    q = l2_normalise(query.flatten(1).T)
    sims, idx = topk_cosine(q, bank, k)
    scores = vote(sims.float(), bank_labels[idx].float(), temperature)  # (h*w, C)
    scores = scores.T.reshape(1, -1, h, w)
    scores = F.interpolate(scores, size=out_size, mode="bilinear", align_corners=False)
    return scores[0].argmax(0)


def confusion(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
              ignore_index: int) -> torch.Tensor:
    """(C, C) counts, rows = ground truth, columns = prediction, over non-ignored pixels."""
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    index = label[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else round(value * 100, 2)


def segmentation_metrics(conf: torch.Tensor, class_names: list[str]) -> dict:
    """mIoU, mAcc, aAcc (percent) and per-class IoU/Acc from a confusion matrix."""
    conf = conf.double()
    intersect = conf.diag()
    area_label, area_pred = conf.sum(1), conf.sum(0)
    iou = intersect / (area_label + area_pred - intersect)  # 0/0 = nan: absent everywhere
    acc = intersect / area_label  # nan: absent from the ground truth
    return {"aAcc": round(float(intersect.sum() / area_label.sum()) * 100, 2),
            "mIoU": round(float(iou.nanmean()) * 100, 2),
            "mAcc": round(float(acc.nanmean()) * 100, 2),
            "per_class": {n: _nan_to_none(float(v)) for n, v in zip(class_names, iou)},
            "per_class_acc": {n: _nan_to_none(float(v)) for n, v in zip(class_names, acc)}}


def memory_entries(features: torch.Tensor, label: torch.Tensor, num_classes: int,
                   ignore_index: int, mode: str = "soft", per_image: int | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's memory entries: (L2-normalised features (n, D), labels (n, C)) of its
    labelled cells, at most ``per_image`` of them (rare classes first) when given."""
    d, h, w = features.shape
    labels, keep = pool_labels(label, (h, w), num_classes, ignore_index, mode)
    feats = features.flatten(1).T[keep]
    labels = labels[keep]
    if per_image is not None and len(feats) > per_image:
        chosen = rare_first(labels.cpu(), per_image, generator or torch.Generator())
        feats, labels = feats[chosen.to(feats.device)], labels[chosen.to(labels.device)]
    return l2_normalise(feats), labels


def choose_subset(n: int, fraction: float, seed: int) -> list[int]:
    """The training images of the memory: ``max(1, round(n * fraction))`` indices drawn
    without replacement by ``seed`` (open-hummingbird-eval shuffles the file list with a seed
    and keeps the first fraction), in ascending order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--memory-fraction must be in (0, 1], got {fraction}")
    count = max(1, round(n * fraction))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:count].tolist())
