"""Checkpoint files: atomic saves, the training state (save, check, restore), and the
backbone export.

Formats (their names in ``pretrain.weight_files``), both loadable with ``weights_only=True``:

- training checkpoint ``{"format": TRAIN_FORMAT, "arch", "model", "optimizer", "scaler",
  "step", "epoch", "rng", "sampler", "corrupt", "config", "git_sha"}``; ``model`` keys are
  ``backbone.*``, ``projector.*``, ``maps_projector.*``, ``classifier.*`` as the official model;
  ``rng`` holds every process's RNG states, in rank order; ``sampler`` is ``{seed,
  batch_size, world_size, drop_last}`` (``drop_last`` absent: written before it existed, when
  every run dropped the partial batch);
- backbone export ``{"format": BACKBONE_FORMAT, "arch", "state_dict", "provenance"}`` with the
  official backbone key names and ``provenance = {source, step, git_sha, sha256}``.
"""
import hashlib
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pretrain.common.files import atomic_open, remove_stale_temporaries
from pretrain.common.provenance import git_sha  # noqa: F401 (recorded in the training checkpoint)
from pretrain.common.state_keys import load_strict
from pretrain.run_logging import log
from pretrain.weight_files import TRAIN_FORMAT  # noqa: F401 (the training checkpoint's format)
from pretrain.weight_files import BACKBONE_FORMAT, WeightsFile, load_state_file


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through ``pretrain.common.files.atomic_open``: a kill at any moment leaves either
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


# ---------------------------------------------------------------- the training state


def rng_state() -> dict:
    """This process's torch, Python, numpy (and CUDA) RNG states, as weights-only-loadable
    values (numpy's key array as a tensor)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                       for k, v in zip(("kind", "keys", "pos", "has_gauss", "cached"),
                                       np.random.get_state())}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy(), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather_rng_states(world: int) -> list[dict]:
    """Every process's ``rng_state()``, in rank order; every process must call it."""
    states = [rng_state()]
    if world > 1:  # gathered as bytes: tensors do not pickle over gloo
        buffer = io.BytesIO()
        torch.save(states[0], buffer)
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, buffer.getvalue())
        states = [torch.load(io.BytesIO(b), weights_only=True) for b in gathered]
    return states


def save_training_state(path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler, step: int, epoch: int, sampler: dict,
                        corrupt: list[str], cfg: dict, sha: str, rank: int, world: int) -> None:
    """Write the training checkpoint (rank 0) after every process's RNG states are gathered
    (every process must call it)."""
    rng = gather_rng_states(world)
    if rank != 0:
        return
    atomic_save({"format": TRAIN_FORMAT, "arch": cfg["model"]["arch"],
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scaler": scaler.state_dict(), "step": step, "epoch": epoch, "rng": rng,
                 "sampler": sampler, "corrupt": list(corrupt), "config": cfg, "git_sha": sha},
                path)


# Config keys a resumed run may change: where files go, how often it logs and saves, how
# fast it goes, where it stops and where the data is read; none changes what it computes
# (the data order and the augmentation depend on the seed, not on the workers or the reader;
# the pipeline, the device and the fused forms change the floating-point arithmetic only). A
# change is named in the log. Every other key changes the run (its model, loss, data, schedule
# or batches): a resume that changes one is refused, naming each.
RESUME_MAY_CHANGE = frozenset({
    "recipe", "run.output_dir", "run.log_every_steps", "run.checkpoint_every_steps",
    "run.export_backbone", "run.check_finite_every_steps", "run.device", "run.compile",
    "run.channels_last", "optim.max_steps", "optim.fused", "model.fuse_views",
    "model.fuse_heads", "data.num_workers", "data.max_corrupt", "data.pipeline", "data.root",
    "data.list_file"})


def _flat(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, cfg: dict) -> tuple[list[str], list[str]]:
    """(refused, allowed): ``key: saved -> new`` for every key whose value differs between
    the checkpoint's config and this run's, split by ``RESUME_MAY_CHANGE``. Keys only one of
    them has (a config of an older version of the code) are not compared."""
    old, new = _flat(saved), _flat(cfg)
    refused, allowed = [], []
    for key in sorted(old.keys() & new.keys()):
        if old[key] != new[key]:
            change = f"{key}: {old[key]!r} -> {new[key]!r}"
            (allowed if key in RESUME_MAY_CHANGE else refused).append(change)
    return refused, allowed


def read_resume_checkpoint(path: Path, cfg: dict) -> dict:
    """The training checkpoint to resume from, checked before any work: weights-only
    loading (a pickle that would run code is refused), our format, the recipe's arch, and
    a config that trains the same run (``config_changes``)."""
    state = load_state_file(path)
    hint = ("; the run stops and changes nothing in its folder: restore a good checkpoint.pth, "
            "or move this one aside to start from step 0")
    if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of this suite (expected a dict "
                         f"with format {TRAIN_FORMAT!r}, written by tools/pretrain.py){hint}")
    if state.get("arch") != cfg["model"]["arch"]:
        raise ValueError(f"{path} holds a {state.get('arch')} run but the recipe trains "
                         f"model.arch={cfg['model']['arch']}{hint}")
    missing = [k for k in ("model", "optimizer", "scaler", "step", "rng") if k not in state]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} (a damaged training "
                         f"checkpoint){hint}")
    _check_same_epochs(state, path, cfg["data"]["drop_last"])
    if isinstance(state.get("config"), dict):
        refused, allowed = config_changes(state["config"], cfg)
        if refused:
            raise ValueError(
                f"{path} was trained with other settings, and resuming with these would change "
                f"the run: {'; '.join(refused)}. The run stops and changes nothing in its "
                "folder: set them back to the checkpoint's values to resume, or give another "
                "run.output_dir to start a new run")
        if allowed:
            log.info("resuming %s with changed settings that do not change the run: %s", path,
                     "; ".join(allowed))
    return state


def _check_same_epochs(state: dict, path: Path, drop_last: bool) -> None:
    """A resumed run must keep its epochs' steps: data.drop_last changes an epoch's length
    and the schedule's, so the saved step would land elsewhere in both."""
    recorded = (state.get("sampler") or {}).get("drop_last")
    if recorded is None:  # written before data.drop_last existed: those runs dropped
        if not drop_last:
            raise ValueError(
                f"{path} was written before data.drop_last existed: its run dropped each "
                "epoch's partial last batch and scheduled the full ones only. Resume it with "
                "data.drop_last=true (the same steps as before), or move it aside to train the "
                "official steps from step 0; the run stops and changes nothing in its folder")
    elif recorded != drop_last:
        raise ValueError(
            f"{path} was trained with data.drop_last={str(recorded).lower()} but the config "
            f"says {str(drop_last).lower()}: the epochs' steps and the schedule would change "
            f"mid-run. Resume with data.drop_last={str(recorded).lower()}; the run stops and "
            "changes nothing in its folder")


def restore_training_state(state: dict, path: Path, *, model: nn.Module,
                           optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                           rank: int) -> tuple[int, list[str]]:
    """Load a checked training checkpoint (``read_resume_checkpoint``) into the run's objects
    and this process's RNGs (rank 0's when the run had fewer processes); returns the step and
    the unreadable images skipped so far (the count goes on across restarts)."""
    load_strict(model, state["model"], f"checkpoint {path}")
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
    log.info("resumed from %s at step %d", path, state["step"])
    return state["step"], list(state.get("corrupt", []))
