"""Pretraining recipes: YAML files over the defaults below, then ``key.sub=value`` overrides.

Unknown keys are errors (a typo must not silently train the default). Values of overrides are
parsed as YAML (``optim.epochs=10``, ``data.size_crops=[96]``, ``loss.l2_all_matches=true``).
"""
import copy
import os
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "model": {
        "arch": "resnet50",
        "mlp": "8192-8192-8192",
        "maps_mlp": "512-512-512",
        "drop_path_rate": 0.1,
        "layer_scale_init_value": 0.0,
        "fuse_views": False,
        # heads once per crop size, BatchNorm statistics still per view (exact; faster)
        "fuse_heads": False,
    },
    "loss": {
        "alpha": 0.75,
        "num_matches": [20, 4],
        "l2_all_matches": False,
        "inv_coeff": 25.0,
        "var_coeff": 25.0,
        "cov_coeff": 1.0,
    },
    "data": {
        "kind": "imagefolder",  # imagefolder | filelist | synthetic
        "root": "imagenet",  # relative paths resolve against the data root
        "list_file": None,
        "num_images": 1024,  # synthetic only
        "image_size": 128,  # synthetic only
        "size_crops": [224, 96],
        "num_crops": [2, 6],
        "min_scale_crops": [0.4, 0.08],
        "max_scale_crops": [1.0, 0.4],
        "flip_grid": False,
        "num_workers": 10,
        "max_corrupt": 100,
        # pil: the official per-image PIL augmentation in the workers. fast: decode once, crop
        # and flip on uint8 in the workers, photometric augmentation batched on the training
        # device (pretrain/fast_augment.py, pretrain/photometric.py; docs/performance.md).
        "pipeline": "pil",
    },
    "optim": {
        "optimizer": "adamw",  # adamw | lars
        "batch_size": 512,  # total over all processes
        "epochs": 100,
        "warmup_epochs": 10,
        "base_lr": 0.0005,  # scaled by batch_size / 256
        "end_lr_ratio": 0.001,
        "weight_decay": 0.05,
        "max_steps": None,  # stop early (smoke runs); the schedule still spans all epochs
        # AdamW's fused kernel / LARS's multi-tensor update (same updates, fewer kernels)
        "fused": False,
    },
    "run": {
        "output_dir": None,  # default: runs/<recipe name>
        "seed": 0,
        "precision": "fp16",  # fp16 (autocast + GradScaler, official) | bf16 | fp32
        "channels_last": True,
        "compile": False,
        # 1: read the loss on every step before its backward pass (a host-device sync per
        # step); N > 1: a device-side record read every N steps and before every checkpoint
        "check_finite_every_steps": 1,
        "sync_bn": True,
        "probe": True,  # online linear probe on view 0 when the dataset has labels
        "checkpoint_every_steps": 1000,
        "log_every_steps": 20,
        "export_backbone": True,
        "device": "auto",  # auto | cuda | cpu
    },
}


def _merge(base: dict, update: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in out:
            raise KeyError(f"unknown config key '{where}{key}'; known here: {', '.join(out)}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise TypeError(f"config key {where}{key} must be a mapping")
            out[key] = _merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    tree: dict = {}
    node = tree
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """Defaults <- recipe file <- overrides. Adds ``recipe`` (the file's stem)."""
    cfg = copy.deepcopy(DEFAULTS)
    recipe = "custom"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe {path} does not exist (see configs/pretrain/)")
        loaded = yaml.safe_load(path.read_text()) or {}
        cfg = _merge(cfg, loaded, "")
        recipe = path.stem
    for text in overrides:
        cfg = _merge(cfg, parse_override(text), "")
    cfg["recipe"] = recipe
    if cfg["run"]["output_dir"] is None:
        cfg["run"]["output_dir"] = str(Path("runs") / recipe)
    return cfg


def data_root(explicit: str | None = None) -> Path:
    """The data root: argument, else $VICREGL_DATA_ROOT, else ./data."""
    return Path(explicit or os.environ.get("VICREGL_DATA_ROOT", "data"))
