"""Batching by shape: views (or view pairs) of one shape go through one call instead of one
call each. Used by the model, the loss, the photometric pipeline and the benchmark, so they
all group the same way. Standard library only (no torch import)."""
from collections.abc import Hashable, Iterable, Sequence


def group_indices(keys: Iterable[Hashable]) -> list[list[int]]:
    """Indices of equal keys together, groups in order of first appearance, indices ascending
    within a group: ``["a", "b", "a"]`` -> ``[[0, 2], [1]]``."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def same_shape(tensors: Sequence) -> list[list[int]]:
    """``group_indices`` of batched tensors by their per-sample shape (all but dim 0)."""
    return group_indices(tuple(t.shape[1:]) for t in tensors)
