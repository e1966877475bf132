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
            _check_type(f"{where}{key}", out[key], value)
            out[key] = value
    return out


def _check_type(key: str, default: Any, value: Any) -> None:
    """The value's type must be the default's (an int is a float too; a string key may be
    null; keys whose default is null take anything): a quoted number or a ``5e-4`` that
    YAML reads as a string must not train on silently. Ranges: ``pretrain.preflight``."""
    if default is None or (value is None and isinstance(default, str)):
        return
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number (write 5.0e-4, not 5e-4, which YAML reads as a string)"
    elif isinstance(default, list):
        ok, expected = isinstance(value, list), "a list, e.g. [224, 96]"
    else:
        ok, expected = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise TypeError(f"config key {key} = {value!r} ({type(value).__name__}): expected "
                        f"{expected}, like the default {default!r}")


def _merge_from(cfg: dict, update: dict, source: str) -> dict:
    """``_merge`` whose errors also name where the bad key came from."""
    try:
        return _merge(cfg, update, "")
    except (KeyError, TypeError) as exc:
        raise type(exc)(f"{source}: {exc.args[0]}") from None


def parse_override(text: str) -> dict:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ValueError(f"override {text!r}: the value is not valid YAML ({exc})") from exc
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
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"recipe {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise TypeError(f"recipe {path}: expected a mapping of sections (model, loss, data, "
                            f"optim, run), got a {type(loaded).__name__}")
        cfg = _merge_from(cfg, loaded, f"recipe {path}")
        recipe = path.stem
    for text in overrides:
        cfg = _merge_from(cfg, parse_override(text), f"override {text!r}")
    cfg["recipe"] = recipe
    if cfg["run"]["output_dir"] is None:
        cfg["run"]["output_dir"] = str(Path("runs") / recipe)
    return cfg


def data_root(explicit: str | None = None) -> Path:
    """The data root: argument, else $VICREGL_DATA_ROOT, else ./data."""
    return Path(explicit or os.environ.get("VICREGL_DATA_ROOT", "data"))
