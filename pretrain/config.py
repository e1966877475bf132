"""The pretraining config: every key once, with its default, its type and its allowed values.

As detectron2's ``add_*_config``, each key below is declared once with a comment saying what it
does. Its default fixes its type, checked while a recipe (a YAML file over the defaults) and
``key.sub=value`` overrides are merged: an unknown key (a typo) or a quoted number must not
silently train the default. Its rule fixes its allowed values, checked with the rules that
span several keys by ``check_pretrain_config`` before any dataset or model is built; every
problem is listed at once, naming the key and the value expected. Override values are parsed
as YAML (``optim.epochs=10``, ``data.size_crops=[96]``, ``loss.l2_all_matches=true``).
"""
import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pretrain.common.arguments import SEED_LIMIT
from pretrain.common.yaml_files import read_yaml_mapping

# A rule returns what it expected when a value breaks it (a phrase after "expected"), else None.
Rule = Callable[[Any], str | None]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(low: int) -> Rule:
    return lambda value: None if _is_int(value) and value >= low else f"an integer >= {low}"


def int_in(low: int, high: int) -> Rule:
    return lambda value: (None if _is_int(value) and low <= value <= high
                          else f"an integer in [{low}, {high}]")


def number_in(low: float, high: float | None = None, low_open: bool = False) -> Rule:
    """A finite number from ``low`` (excluded when ``low_open``) to ``high``: YAML's ``.inf``
    and ``.nan`` are floats, and ``.inf`` passes every lower bound."""
    def rule(value: Any) -> str | None:
        ok = _is_number(value) and math.isfinite(value) and (
            value > low if low_open else value >= low) and (high is None or value <= high)
        if ok:
            return None
        # a key whose default is null has no type check while merging: say it here
        hint = " (write 5.0e-4, not 5e-4, which YAML reads as a string)" * isinstance(value, str)
        if high is None:
            return f"a finite number {'>' if low_open else '>='} {low}{hint}"
        return f"a number in {'(' if low_open else '['}{low}, {high}]{hint}"
    return rule


def one_of(*choices: Any) -> Rule:
    return lambda value: None if value in choices else f"one of {', '.join(map(str, choices))}"


def optional(rule: Rule) -> Rule:
    return lambda value: None if value is None else rule(value)


def layer_widths(value: Any) -> str | None:
    ok = re.fullmatch(r"[1-9]\d*(-[1-9]\d*)*", str(value))
    return None if ok else "layer widths joined by '-', e.g. 8192-8192-8192"


def two_integers(value: Any) -> str | None:
    ok = isinstance(value, list) and len(value) == 2 and all(map(_is_int, value))
    return None if ok else "two integers, e.g. [20, 4]"


def known_arch(value: Any) -> str | None:
    from .backbones import ARCHS  # imports torch: only when a config is checked

    return one_of(*ARCHS)(value)


@dataclass(frozen=True)
class Key:
    default: Any  # its type is the key's type; null: any type (checked by the rule, if any)
    rule: Rule | None = None  # allowed values beyond the type


SCHEMA: dict[str, dict[str, Key]] = {
    "model": {
        # backbone by its official name: resnet18/34/50/101, convnext_tiny/small/base/...; for
        # CPU runs resnet_nano (output stride 8) and convnext_mini
        "arch": Key("resnet50", known_arch),
        # widths of the global expander's layers (official --mlp)
        "mlp": Key("8192-8192-8192", layer_widths),
        # widths of the local projector's layers, applied to every feature-map vector
        "maps_mlp": Key("512-512-512", layer_widths),
        # ConvNeXt stochastic depth, rising linearly to this rate in the last block
        "drop_path_rate": Key(0.1, number_in(0.0, 1.0)),
        # ConvNeXt layer scale's initial value; 0: no layer scale (official)
        "layer_scale_init_value": Key(0.0),
        # backbone once per crop size, not once per view (ConvNeXt only: LayerNorm, no batch
        # statistics to change)
        "fuse_views": Key(False),
        # heads once per crop size, BatchNorm statistics still per view (exact; faster)
        "fuse_heads": Key(False),
    },
    "loss": {
        # weight of the global (image-level) criterion; 1 - alpha weighs the local one
        "alpha": Key(0.75, number_in(0.0, 1.0)),
        # nearest matches kept per view pair, first view to second and back (official
        # --num-matches); the location matching always, the feature matching unless:
        "num_matches": Key([20, 4], two_integers),
        # true: feature matching over all positions (the official code's default); false:
        # the num_matches nearest (the paper's setting)
        "l2_all_matches": Key(False),
        # invariance term's coefficient (official --inv-coeff)
        "inv_coeff": Key(25.0, number_in(0.0)),
        # variance term's coefficient (official --var-coeff)
        "var_coeff": Key(25.0, number_in(0.0)),
        # covariance term's coefficient (official --cov-coeff)
        "cov_coeff": Key(1.0, number_in(0.0)),
    },
    "data": {
        # where images come from: an ImageNet-layout folder, a file list, or rendered scenes
        "kind": Key("imagefolder", one_of("imagefolder", "filelist", "synthetic")),
        # image folder, or the file list's base folder; relative to the data root
        "root": Key("imagenet"),
        # kind filelist: one image path (and optional integer label) per line
        "list_file": Key(None),
        # kind synthetic: number of scenes (checked for that kind only)
        "num_images": Key(1024),
        # kind synthetic: side of each scene in pixels (checked for that kind only)
        "image_size": Key(128),
        # kind synthetic: mixed (several classes a scene; label = largest object's class) or
        # dominant (all objects of the scene's class but one distractor); pretrain/synthetic.py
        "world": Key("mixed", one_of("mixed", "dominant")),
        # side in pixels of each crop group's views, large crops first
        "size_crops": Key([224, 96]),
        # views per crop group; views 0 and 1 are the two large crops both criteria compare
        "num_crops": Key([2, 6]),
        # smallest fraction of the image area a crop of each group covers
        "min_scale_crops": Key([0.4, 0.08]),
        # largest fraction of the image area a crop of each group covers
        "max_scale_crops": Key([1.0, 0.4]),
        # mirror the location grid of flipped crops (geometrically right); false: official
        "flip_grid": Key(False),
        # Gaussian blur probability of the even- and odd-index crops of each size (official
        # [1.0, 0.1]); [0, 0] for tiny crops, where a blur of sigma up to 2 erases textures
        "blur_probs": Key([1.0, 0.1], lambda v: None if isinstance(v, list) and len(v) == 2
                          and all(_is_number(p) and 0 <= p <= 1 for p in v)
                          else "two probabilities in [0, 1], e.g. [1.0, 0.1]"),
        # DataLoader worker processes per training process
        "num_workers": Key(10, at_least(0)),
        # unreadable images skipped (and logged) before the run stops
        "max_corrupt": Key(100, at_least(0)),
        # false: each epoch ends with a partial batch, as the official loader. true (a
        # deviation): full batches only, and the schedule spans those steps (pretrain/optim.py)
        "drop_last": Key(False),
        # pil: the official per-image PIL augmentation in the workers. fast: decode once, crop
        # and flip on uint8 in the workers, photometric augmentation batched on the training
        # device (pretrain/fast_augment.py, pretrain/photometric.py; docs/performance.md).
        # memory: every image decoded once into one tensor on the training device, each
        # step's crops cut for the whole batch at once (pretrain/memory_pipeline.py): for
        # data sets that fit in memory (CPU demo, synthetic data)
        "pipeline": Key("pil", one_of("pil", "fast", "memory")),
    },
    "optim": {
        # adamw (decay on weight matrices only) or lars (biases and norms excluded)
        "optimizer": Key("adamw", one_of("adamw", "lars")),
        # images per step, total over all processes
        "batch_size": Key(512, at_least(1)),
        # passes over the data; the learning-rate schedule spans epochs * images // batch_size
        # steps (official; a bit less than the run with the partial batches: then held)
        "epochs": Key(100, at_least(1)),
        # linear warm-up from 0 (warmup_epochs * images // batch_size steps), then the cosine
        "warmup_epochs": Key(10, at_least(0)),
        # peak learning rate per 256 images: the peak is base_lr * batch_size / 256
        "base_lr": Key(0.0005, number_in(0.0, low_open=True)),
        # the cosine decay ends at peak * end_lr_ratio
        "end_lr_ratio": Key(0.001, number_in(0.0)),
        # weight decay of the decayed parameters; null: the optimiser's official one
        # (LARS 1e-6, which the official code hard-codes; AdamW 0.05)
        "weight_decay": Key(None, optional(number_in(0.0))),
        # stop early (smoke runs); the schedule still spans all epochs
        "max_steps": Key(None, optional(at_least(1))),
        # AdamW's fused kernel / LARS's multi-tensor update (same updates, fewer kernels)
        "fused": Key(False),
    },
    "run": {
        # where the run's files go; null: runs/<recipe name>
        "output_dir": Key(None),
        # seeds the initialisation, the data order and every sample's augmentation (numpy
        # seeds are 32-bit)
        "seed": Key(0, int_in(0, SEED_LIMIT - 1)),
        # fp16 (autocast + GradScaler, official) | bf16 | fp32
        "precision": Key("fp16", one_of("fp16", "bf16", "fp32")),
        # channels-last memory format for the model and the views (faster convolutions on GPUs)
        "channels_last": Key(True),
        # torch.compile the training model
        "compile": Key(False),
        # 1: read the loss on every step before its backward pass (a host-device sync per
        # step); N > 1: a device-side record read every N steps and before every checkpoint
        "check_finite_every_steps": Key(1, at_least(1)),
        # BatchNorm statistics synchronised across processes (CUDA only; ResNet and its heads)
        "sync_bn": Key(True),
        # online linear probe on view 0 when the dataset has labels
        "probe": Key(True),
        # write checkpoint.pth every N steps (and at the last step)
        "checkpoint_every_steps": Key(1000, at_least(1)),
        # write a metrics.jsonl record every N steps (and at the last step)
        "log_every_steps": Key(20, at_least(1)),
        # write backbone.pth, the backbone alone for transfer, at the end
        "export_backbone": Key(True),
        # auto: cuda when a GPU is visible, else cpu
        "device": Key("auto", one_of("auto", "cuda", "cpu")),
    },
}


def defaults() -> dict:
    """A fresh config of the defaults, ``{section: {key: value}}``."""
    return {section: {name: copy.deepcopy(key.default) for name, key in keys.items()}
            for section, keys in SCHEMA.items()}


# ---------------------------------------------------------------- types, while merging


def check_type(name: str, default: Any, value: Any) -> None:
    """The value's type must be the default's (an int is a float too; a string key may be
    null; keys whose default is null take anything): a quoted number or a ``5e-4`` that
    YAML reads as a string must not train on silently."""
    if default is None or (value is None and isinstance(default, str)):
        return
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = _is_int(value), "an integer"
    elif isinstance(default, float):
        ok = _is_number(value)
        expected = "a number (write 5.0e-4, not 5e-4, which YAML reads as a string)"
    elif isinstance(default, list):
        ok, expected = isinstance(value, list), "a list, e.g. [224, 96]"
    else:
        ok, expected = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise TypeError(f"config key {name} = {value!r} ({type(value).__name__}): expected "
                        f"{expected}, like the default {default!r}")


def _declared(name: str, current: Any) -> Any:
    """The schema default of ``section.key`` (its type), else ``current``: a null-default key
    a recipe set to a number may still be set back to null by an override."""
    section, _, key = name.partition(".")
    declared = SCHEMA.get(section, {}).get(key)
    return current if declared is None else declared.default


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
            check_type(f"{where}{key}", _declared(f"{where}{key}", out[key]), value)
            out[key] = value
    return out


def _merge_from(cfg: dict, update: dict, source: str) -> dict:
    """``_merge`` whose errors also name where the bad key came from."""
    try:
        return _merge(cfg, update, "")
    except (KeyError, TypeError) as exc:
        raise type(exc)(f"{source}: {exc.args[0]}") from None


# ---------------------------------------------------------------- values, before any work


class ConfigValueError(ValueError):
    """A config value outside its range; the message lists every offending key."""


def _crop_lists(data: dict) -> list[str]:
    """Crop lists of one length, integer sizes and counts >= 1, 0 < min <= max <= 1 scales,
    and the two large crops first."""
    lists = {k: data[k] for k in ("size_crops", "num_crops", "min_scale_crops",
                                   "max_scale_crops")}
    if not all(isinstance(v, list) and v for v in lists.values()) or \
            len({len(v) for v in lists.values()}) != 1:
        return ["data.size_crops, data.num_crops, data.min_scale_crops and "
                "data.max_scale_crops: expected non-empty lists of one length, got "
                + ", ".join(f"{k}={v!r}" for k, v in lists.items())]
    problems = []
    for i, (size, n, low, high) in enumerate(zip(*lists.values())):
        for name, value in (("size_crops", size), ("num_crops", n)):
            if at_least(1)(value):
                problems.append(f"data.{name}[{i}] = {value!r}: expected an integer >= 1")
        if not (_is_number(low) and _is_number(high) and 0 < low <= high <= 1):
            problems.append(f"data.min_scale_crops[{i}], data.max_scale_crops[{i}] = {low!r}, "
                            f"{high!r}: expected 0 < min <= max <= 1")
    first = lists["num_crops"][0]
    if _is_int(first) and first < 2:
        problems.append(f"data.num_crops[0] = {first}: expected >= 2 (views 0 and 1 are the "
                        "two large crops the global loss compares)")
    return problems


def _crop_grids(cfg: dict) -> list[str]:
    """Every crop size must give the backbone a local grid of at least 1 x 1."""
    from .backbones import ARCHS, feature_size, output_stride

    arch, sizes = cfg["model"]["arch"], cfg["data"]["size_crops"]
    if arch not in ARCHS or not isinstance(sizes, list):
        return []
    stride = output_stride(arch)
    return [f"data.size_crops[{i}] = {size}: {arch} (output stride {stride}) makes no local "
            f"grid from it; expected a crop of at least {stride} pixels"
            for i, size in enumerate(sizes)
            if _is_int(size) and size >= 1 and feature_size(arch, size) < 1]


def _across_keys(cfg: dict, world_size: int) -> list[str]:
    """The rules that tie keys together (and to the number of processes)."""
    from .backbones import norm_kind

    model, data, optim = cfg["model"], cfg["data"], cfg["optim"]
    problems = _crop_lists(data) + _crop_grids(cfg)
    warmup, epochs = optim["warmup_epochs"], optim["epochs"]
    if _is_int(warmup) and _is_int(epochs) and warmup > epochs:
        problems.append(f"optim.warmup_epochs = {warmup}: expected <= optim.epochs ({epochs})")
    if model["fuse_views"] and norm_kind(model["arch"]) == "batch_norm":
        problems.append(f"model.fuse_views = true with model.arch={model['arch']}: expected "
                        "false (fusing views changes BatchNorm statistics; ConvNeXt only)")
    if data["kind"] == "synthetic":
        for name, low in (("num_images", 1), ("image_size", 8)):
            if at_least(low)(data[name]):
                problems.append(f"data.{name} = {data[name]!r}: expected an integer >= {low}")
    batch = optim["batch_size"]
    if _is_int(batch) and batch >= 1 and batch % world_size:
        problems.append(f"optim.batch_size = {batch}: expected a multiple of the "
                        f"{world_size} processes")
    return problems


def check_pretrain_config(cfg: dict, world_size: int = 1) -> None:
    """Raise ``ConfigValueError`` listing every out-of-range value of a merged config
    (``load_config``; types were checked while merging), for ``world_size`` processes."""
    problems = []
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            value = cfg[section][name]
            expected = key.rule(value) if key.rule else None
            if expected:
                problems.append(f"{section}.{name} = {value!r}: expected {expected}")
    problems += _across_keys(cfg, world_size)
    where = f"recipe {cfg.get('recipe', 'config')}"
    if len(problems) == 1:  # one line
        raise ConfigValueError(f"{where}: {problems[0]}")
    if problems:
        raise ConfigValueError(f"{where}: {len(problems)} bad value(s):\n  - "
                               + "\n  - ".join(problems))


# ---------------------------------------------------------------- loading


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


def _read_recipe(path: Path) -> dict:
    return read_yaml_mapping(path, "recipe", "configs/pretrain/",
                             "model, loss, data, optim, run")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """Defaults <- recipe file <- overrides, types checked (values: ``check_pretrain_config``).
    Adds ``recipe`` (the file's stem)."""
    cfg, recipe = defaults(), "custom"
    if path is not None:
        path = Path(path)
        cfg = _merge_from(cfg, _read_recipe(path), f"recipe {path}")
        recipe = path.stem
    for text in overrides:
        cfg = _merge_from(cfg, parse_override(text), f"override {text!r}")
    cfg["recipe"] = recipe
    if cfg["run"]["output_dir"] is None:
        cfg["run"]["output_dir"] = str(Path("runs") / recipe)
    return cfg
