"""Checkpoint files: atomic writes, the training checkpoint, and the backbone export.

Formats (hand-off 1 of ``shared/design.md``), both loadable with ``weights_only=True``:

- training checkpoint ``{"format": TRAIN_FORMAT, "arch", "model", "optimizer", "scaler",
  "step", "epoch", "rng", "sampler", "config", "git_sha"}``; ``model`` keys are
  ``backbone.*``, ``projector.*``, ``maps_projector.*``, ``classifier.*`` as the official model;
- backbone export ``{"format": BACKBONE_FORMAT, "arch", "state_dict", "provenance"}`` with the
  official backbone key names and ``provenance = {source, step, git_sha, sha256}``.
"""
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from pretrain.pids import pid_alive

TRAIN_FORMAT = "vicregl-suite/train-checkpoint/v1"
BACKBONE_FORMAT = "vicregl-suite/backbone/v1"


def atomic_save(obj: Any, path: str | Path) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: a kill
    at any moment leaves either the old file or the new one, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or an interrupt: keep the old file, drop the partial
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the partial ``.<name>.tmp-<pid>`` files of ``path`` left by killed processes
    (a kill -9 during a save leaves one, as large as a checkpoint); live writers' are kept."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed




def git_sha(repo: str | Path | None = None) -> str:
    """The commit of the code that runs ("unknown" outside a git checkout; "+dirty" suffix)."""
    repo = Path(repo or Path(__file__).resolve().parent.parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the keys and the bytes of every tensor, in key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


def backbone_state_from_model_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "backbone."
    state = {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}
    if not state:
        raise ValueError("the model state has no backbone.* keys")
    return state


def export_backbone(train_checkpoint: dict, out_path: str | Path, source: str) -> dict:
    """Write the backbone-only checkpoint used for transfer; returns what was written."""
    state = {k: v.detach().cpu().clone() for k, v in
             backbone_state_from_model_state(train_checkpoint["model"]).items()}
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
