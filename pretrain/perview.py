"""A projection head over several views in one call, BatchNorm statistics still per view.

The official model calls its heads once per view, so each view's BatchNorm normalises with
that view's batch statistics and updates the running statistics once. ``per_view_mlp`` gives
the same outputs and running statistics from ONE pass: the views are interleaved row by row,
(N, V, D) -> (N * V, D), so every Linear runs once on all views (one large matrix product and
one weight-gradient product instead of V of each), and each BatchNorm sees the (N, V * D)
view of its input, whose V * D channels are the (view, feature) pairs: per-view statistics by
construction, without a copy. The BatchNorm itself runs through ``torch.func.functional_call``
on a twin module of V * D features (same class, so SyncBatchNorm stays synchronised) with the
weights repeated V times; its batch statistics are then folded into the real running buffers
as V successive momentum updates, as V calls would have made them.
"""
import torch
from torch import nn
from torch.func import functional_call


def _twin(bn: nn.modules.batchnorm._BatchNorm, views: int) -> nn.Module:
    """A BatchNorm of the same class with ``views`` x the features and momentum 1: its running
    buffers then receive exactly the batch mean and the unbiased batch variance. On the meta
    device: ``functional_call`` supplies every tensor, so building it allocates nothing."""
    kwargs = dict(eps=bn.eps, momentum=1.0, affine=True, track_running_stats=True,
                  device="meta", dtype=bn.weight.dtype)
    if isinstance(bn, nn.SyncBatchNorm):
        kwargs["process_group"] = bn.process_group
    twin = type(bn)(bn.num_features * views, **kwargs)
    return twin.train(bn.training)


def per_view_batch_norm(x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm,
                        views: int) -> torch.Tensor:
    """``bn`` on (N, views * D) input, statistics per (view, feature)."""
    if not (bn.affine and bn.track_running_stats) or bn.momentum is None:
        raise ValueError("per_view_batch_norm needs an affine BatchNorm with running statistics "
                         "and a float momentum (the heads' BatchNorm1d)")
    if not bn.training:
        return nn.functional.batch_norm(x, bn.running_mean.repeat(views),
                                        bn.running_var.repeat(views), bn.weight.repeat(views),
                                        bn.bias.repeat(views), False, 0.0, bn.eps)
    twin = _twin(bn, views)
    mean = bn.running_mean.new_zeros(twin.num_features)
    var = bn.running_var.new_ones(twin.num_features)
    y = functional_call(twin, {"weight": bn.weight.repeat(views), "bias": bn.bias.repeat(views),
                               "running_mean": mean, "running_var": var,
                               "num_batches_tracked": bn.num_batches_tracked.new_zeros(())},
                        (x,))
    with torch.no_grad():
        m = bn.momentum
        for batch_mean, batch_var in zip(mean.view(views, -1), var.view(views, -1)):
            bn.running_mean.mul_(1 - m).add_(batch_mean, alpha=m)
            bn.running_var.mul_(1 - m).add_(batch_var, alpha=m)
        bn.num_batches_tracked.add_(views)
    return y


def per_view_mlp(head: nn.Sequential, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[head(x) for x in inputs]`` (all (N, D), same N) in one pass, BatchNorm per input."""
    views, rows = len(inputs), inputs[0].shape[0]
    if views == 1:
        return [head(inputs[0])]
    x = torch.stack(inputs, dim=1).flatten(0, 1)  # row n * views + v = inputs[v][n]
    for layer in head:
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            x = per_view_batch_norm(x.view(rows, -1), layer, views).view(rows * views, -1)
        else:
            x = layer(x)
    return list(x.view(rows, views, -1).unbind(1))
