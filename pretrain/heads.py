"""Projection heads as the official ``utils.MLP``: (Linear-Norm-ReLU)* then a bias-free Linear.

Module indices equal the official ones (``projector.0.weight``, ``projector.1.running_mean``,
...), so official checkpoints load strictly.
"""
from torch import nn


def mlp(spec: str, in_dim: int, norm: str) -> nn.Sequential:
    """``spec`` like ``"8192-8192-8192"``; ``norm`` is ``"batch_norm"`` or ``"layer_norm"``."""
    dims = [in_dim] + [int(d) for d in str(spec).split("-")]
    if norm not in ("batch_norm", "layer_norm"):
        raise ValueError(f"norm must be 'batch_norm' or 'layer_norm', got {norm!r}")
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        layers.append(nn.Linear(d_in, d_out))
        layers.append(nn.BatchNorm1d(d_out) if norm == "batch_norm" else nn.LayerNorm(d_out))
        layers.append(nn.ReLU(True))
    layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
    return nn.Sequential(*layers)
