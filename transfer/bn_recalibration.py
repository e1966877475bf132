"""BatchNorm running statistics recomputed on clean images (pure torch, no framework).

A frozen evaluation runs the backbone in eval mode, so every BatchNorm normalises with its
running statistics. Those differ by origin: a random initialisation has the identity (mean 0,
var 1), a pretrained backbone the statistics of its augmented training views. Recomputing them
on the same clean images for every backbone puts them on one footing before evaluation.

``recalibrate_batchnorm`` forwards the images with the BatchNorm layers in train mode (they
normalise with the batch's statistics, as in training) and everything else in eval mode (no
dropout or drop-path noise), without gradients. Each BatchNorm's new statistics are the exact
per-channel mean and unbiased variance of everything it saw, over all batches together
(batches are combined by Chan's parallel formula in float64, so the result does not depend on
how the images were batched, a smaller last batch included). Only the running statistics and
``num_batches_tracked`` change; momentum, the affine weights and every module's training flag
are as before.
"""
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(module: nn.Module) -> dict[str, _BatchNorm]:
    """The BatchNorm layers (any dimension, SyncBatchNorm too) that keep running statistics,
    by their names in ``module``."""
    return {name: m for name, m in module.named_modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats}


class _Moments:
    """Count, mean and sum of squared deviations per channel, merged batch by batch."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]  # every dimension but the channels
        n = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x.detach().float(), dim=dims, correction=0)
        mean, m2 = mean.double(), var.double() * n
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.n * n / total)
        self.n = total


def _as_images(batch) -> torch.Tensor:
    """A batch of images: the tensor itself, or the first item of an (images, labels) pair."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def recalibrate_batchnorm(backbone: nn.Module, batches: Iterable[torch.Tensor],
                          device: torch.device | str = "cpu") -> int:
    """Recompute the running mean and variance of every BatchNorm of ``backbone`` (moved to
    ``device``) from ``batches`` (image tensors, or (images, labels) pairs as a DataLoader of
    an ImageFolder yields them); returns the number of images seen. A backbone without
    BatchNorm is left as it is and 0 returned, without reading ``batches``. Raises
    ``ValueError`` when there were no images, or when a resulting statistic is not finite
    (naming the layers); the statistics are then as they were before the call."""
    layers = batchnorm_layers(backbone)
    if not layers:
        return 0
    backbone.to(device)
    flags = {m: m.training for m in backbone.modules()}
    saved = {name: (bn.running_mean.clone(), bn.running_var.clone(),
                    bn.num_batches_tracked.clone()) for name, bn in layers.items()}
    moments = {name: _Moments() for name in layers}
    hooks = [bn.register_forward_pre_hook(lambda _m, args, acc=moments[name]: acc.add(args[0]))
             for name, bn in layers.items()]
    images = batches_seen = 0
    try:
        backbone.eval()
        for bn in layers.values():
            bn.reset_running_stats()
            bn.train()
        for batch in batches:
            x = _as_images(batch).to(device, non_blocking=True)
            backbone(x)
            images += x.shape[0]
            batches_seen += 1
        if images == 0:
            raise ValueError("no images to recompute the BatchNorm statistics from")
        bad = []
        for name, bn in layers.items():
            m = moments[name]
            var = m.m2 / max(m.n - 1, 1)
            if not (torch.isfinite(m.mean).all() and torch.isfinite(var).all()):
                bad.append(name)
                continue
            bn.running_mean.copy_(m.mean.to(bn.running_mean.dtype))
            bn.running_var.copy_(var.to(bn.running_var.dtype))
            bn.num_batches_tracked.fill_(batches_seen)
        if bad:
            raise ValueError(f"non-finite BatchNorm statistics after {images} images in "
                             f"{len(bad)} layer(s): {', '.join(bad[:8])}"
                             + (" ..." if len(bad) > 8 else ""))
    except BaseException:
        for name, bn in layers.items():
            for buffer, value in zip((bn.running_mean, bn.running_var, bn.num_batches_tracked),
                                     saved[name]):
                buffer.copy_(value)
        raise
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in flags.items():
            module.training = training
    return images
