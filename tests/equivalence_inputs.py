"""Deterministic weights and inputs for the model-level equivalence figures.

The figures in ``tests/data/official_model_terms.json`` were produced by running the official
VICRegL code (commit 803ae4c, CPU, float64) on exactly these weights and inputs; the test runs
ours on the same ones. Weights depend only on each key's name and shape (not on the order of
keys or on any module's own initialisation), so both implementations receive identical tensors.
"""
import math
import zlib

import torch


def fill_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A float64 state dict of seeded values keyed by name: BN/LN scales near 1, biases near 0,
    running statistics (0, 1), weights ~ N(0, 1/fan_in)."""
    out = {}
    for key, ref in state.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros_like(ref)
        elif key.endswith("running_mean"):
            out[key] = torch.zeros(ref.shape, dtype=torch.float64)
        elif key.endswith("running_var"):
            out[key] = torch.ones(ref.shape, dtype=torch.float64)
        elif ref.ndim == 1 and key.endswith("weight"):
            out[key] = 1 + 0.1 * torch.randn(ref.shape, generator=g, dtype=torch.float64)
        elif ref.ndim == 1:
            out[key] = 0.1 * torch.randn(ref.shape, generator=g, dtype=torch.float64)
        else:
            fan_in = math.prod(ref.shape[1:])
            out[key] = torch.randn(ref.shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
    return out


def grid(top, left, h, w, n):
    """(n, n, 2) cell centres (row, col) in original-image pixels."""
    k = torch.arange(n, dtype=torch.float64) + 0.5
    rows = top + k * h / n
    cols = left + k * w / n
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)


def make_inputs(crops: list[tuple[int, int]], batch: int = 4, seed: int = 0):
    """Views (B, 3, S, S) and location grids for ``crops`` = [(size, grid_n), ...]."""
    g = torch.Generator().manual_seed(seed)
    views, locations = [], []
    for size, n in crops:
        views.append(torch.randn(batch, 3, size, size, generator=g, dtype=torch.float64))
        boxes = []
        for _ in range(batch):
            h, w = (float(v) for v in torch.randint(60, 300, (2,), generator=g))
            top, left = (float(v) for v in torch.randint(0, 200, (2,), generator=g))
            boxes.append(grid(top, left, h, w, n))
        locations.append(torch.stack(boxes))
    return views, locations


# The cases the figures cover: (name, official args, crops).
HEADS = dict(mlp="512-512-512", maps_mlp="64-64-64", drop_path_rate=0.0, num_classes=10)
CASES = {
    "resnet50_2x224": (dict(arch="resnet50", **HEADS), [(224, 7)] * 2),
    "resnet50_2x224+6x96": (dict(arch="resnet50", **HEADS), [(224, 7)] * 2 + [(96, 3)] * 6),
    "convnext_small_2x224": (dict(arch="convnext_small", **HEADS), [(224, 7)] * 2),
    "convnext_small_2x224+6x96": (dict(arch="convnext_small", **HEADS),
                                  [(224, 7)] * 2 + [(96, 3)] * 6),
}
