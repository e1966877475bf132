"""Checkpoint files: atomic saves, the training checkpoint, and the backbone export.

Formats (their names in ``pretrain.weight_files``), both loadable with ``weights_only=True``:

- training checkpoint ``{"format": TRAIN_FORMAT, "arch", "model", "optimizer", "scaler",
  "step", "epoch", "rng", "sampler", "config", "git_sha"}``; ``model`` keys are
  ``backbone.*``, ``projector.*``, ``maps_projector.*``, ``classifier.*`` as the official model;
- backbone export ``{"format": BACKBONE_FORMAT, "arch", "state_dict", "provenance"}`` with the
  official backbone key names and ``provenance = {source, step, git_sha, sha256}``.
"""
import hashlib
from pathlib import Path
from typing import Any

import torch

from pretrain.files import atomic_open, remove_stale_temporaries
from pretrain.provenance import git_sha  # noqa: F401 (recorded in the training checkpoint)
from pretrain.weight_files import TRAIN_FORMAT  # noqa: F401 (the training checkpoint's format)
from pretrain.weight_files import BACKBONE_FORMAT, WeightsFile


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through ``pretrain.files.atomic_open``: a kill at any moment leaves either
    the old file or the new one, never a truncated one. The partial files of killed earlier
    saves are removed first (each is as large as a checkpoint)."""
    path = Path(path)
    remove_stale_temporaries(path)
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return path


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the keys and the bytes of every tensor, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


def export_backbone(train_checkpoint: dict, out_path: str | Path, source: str) -> dict:
    """Write the backbone-only checkpoint used for transfer; returns what was written."""
    backbone, _ = WeightsFile(str(source), "ours-train", train_checkpoint["model"]).backbone()
    state = {k: v.detach().cpu().clone() for k, v in backbone.items()}
    export = {
        "format": BACKBONE_FORMAT,
        "arch": train_checkpoint["arch"],
        "state_dict": state,
        "provenance": {"source": str(source), "step": int(train_checkpoint.get("step", -1)),
                       "git_sha": train_checkpoint.get("git_sha", "unknown"),
                       "sha256": state_dict_sha256(state)},
    }
    atomic_save(export, out_path)
    return export
