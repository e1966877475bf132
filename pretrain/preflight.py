"""Checks that run before any long work: config values, crop sizes, output locations.

Every check names the config key (or the path) and the value it expected, and all problems
of a config are reported at once. ``tools/pretrain.py`` and ``pretrain.engine.train`` call
``check_pretrain_config`` before building a dataset or a model; the tools that write files
call ``check_output_dir`` / ``check_output_file`` before reading their inputs.
"""
import errno
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from pretrain.files import OutputWriteError


class ConfigValueError(ValueError):
    """A config value outside its range; the message lists every offending key."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_at_least(problems: list[str], key: str, value: Any, low: int) -> None:
    if not _is_int(value) or value < low:
        problems.append(f"{key} = {value!r}: expected an integer >= {low}")


def _number_in(problems: list[str], key: str, value: Any, low: float, high: float | None,
               low_open: bool = False) -> None:
    bad = not _is_number(value) or value < low or (low_open and value == low) or (
        high is not None and value > high)
    if bad:
        bracket = "(" if low_open else "["
        upper = f"{high}]" if high is not None else "inf)"
        problems.append(f"{key} = {value!r}: expected a number in {bracket}{low}, {upper}")


def _one_of(problems: list[str], key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        problems.append(f"{key} = {value!r}: expected one of {', '.join(map(str, choices))}")


def _check_crops(problems: list[str], data: dict, arch: str) -> None:
    """Equal-length crop lists, sensible scales, and a local grid of at least 1 x 1 per size."""
    from .backbones import CONVNEXT_SPECS, RESNET_SPECS, ConvNeXt, ResNet

    keys = ("size_crops", "num_crops", "min_scale_crops", "max_scale_crops")
    lists = {k: data[k] for k in keys}
    if not all(isinstance(v, list) and v for v in lists.values()) or \
            len({len(v) for v in lists.values()}) != 1:
        problems.append("data.size_crops, data.num_crops, data.min_scale_crops and "
                        "data.max_scale_crops: expected non-empty lists of one length, got "
                        + ", ".join(f"{k}={v!r}" for k, v in lists.items()))
        return
    for i, (size, n, low, high) in enumerate(zip(*lists.values())):
        _int_at_least(problems, f"data.size_crops[{i}]", size, 1)
        _int_at_least(problems, f"data.num_crops[{i}]", n, 1)
        if not (_is_number(low) and _is_number(high) and 0 < low <= high <= 1):
            problems.append(f"data.min_scale_crops[{i}], data.max_scale_crops[{i}] = {low!r}, "
                            f"{high!r}: expected 0 < min <= max <= 1")
    backbone = ResNet if arch in RESNET_SPECS else ConvNeXt if arch in CONVNEXT_SPECS else None
    if backbone is None:
        return
    for i, size in enumerate(lists["size_crops"]):
        if _is_int(size) and size >= 1 and backbone.feature_size(size) < 1:
            problems.append(f"data.size_crops[{i}] = {size}: {arch} (output stride 32) makes "
                            f"no local grid from it; expected a crop of at least 32 pixels")
    if _is_int(lists["num_crops"][0]) and lists["num_crops"][0] < 2:
        problems.append(f"data.num_crops[0] = {lists['num_crops'][0]}: expected >= 2 (views 0 "
                        "and 1 are the two large crops the global loss compares)")


def _check_optim(problems: list[str], optim: dict) -> None:
    _one_of(problems, "optim.optimizer", optim["optimizer"], ("adamw", "lars"))
    _int_at_least(problems, "optim.batch_size", optim["batch_size"], 1)
    _int_at_least(problems, "optim.epochs", optim["epochs"], 1)
    _int_at_least(problems, "optim.warmup_epochs", optim["warmup_epochs"], 0)
    if _is_int(optim["warmup_epochs"]) and _is_int(optim["epochs"]) and \
            optim["warmup_epochs"] > optim["epochs"]:
        problems.append(f"optim.warmup_epochs = {optim['warmup_epochs']}: expected <= "
                        f"optim.epochs ({optim['epochs']})")
    _number_in(problems, "optim.base_lr", optim["base_lr"], 0.0, None, low_open=True)
    _number_in(problems, "optim.end_lr_ratio", optim["end_lr_ratio"], 0.0, None)
    _number_in(problems, "optim.weight_decay", optim["weight_decay"], 0.0, None)
    if optim["max_steps"] is not None:
        _int_at_least(problems, "optim.max_steps", optim["max_steps"], 1)


def _check_loss(problems: list[str], loss: dict) -> None:
    _number_in(problems, "loss.alpha", loss["alpha"], 0.0, 1.0)
    matches = loss["num_matches"]
    if not (isinstance(matches, list) and len(matches) == 2 and all(map(_is_int, matches))):
        problems.append(f"loss.num_matches = {matches!r}: expected two integers [large, small]")
    for name in ("inv_coeff", "var_coeff", "cov_coeff"):
        _number_in(problems, f"loss.{name}", loss[name], 0.0, None)


def _check_data_run(problems: list[str], data: dict, run: dict) -> None:
    _one_of(problems, "data.kind", data["kind"], ("imagefolder", "filelist", "synthetic"))
    _one_of(problems, "data.pipeline", data["pipeline"], ("pil", "fast"))
    _int_at_least(problems, "data.num_workers", data["num_workers"], 0)
    _int_at_least(problems, "data.max_corrupt", data["max_corrupt"], 0)
    if data["kind"] == "synthetic":
        _int_at_least(problems, "data.num_images", data["num_images"], 1)
        _int_at_least(problems, "data.image_size", data["image_size"], 8)
    _one_of(problems, "run.precision", run["precision"], ("fp16", "bf16", "fp32"))
    _one_of(problems, "run.device", run["device"], ("auto", "cuda", "cpu"))
    _int_at_least(problems, "run.seed", run["seed"], 0)
    for name in ("checkpoint_every_steps", "log_every_steps", "check_finite_every_steps"):
        _int_at_least(problems, f"run.{name}", run[name], 1)


def _check_model(problems: list[str], model: dict) -> None:
    from .backbones import RESNET_SPECS

    _number_in(problems, "model.drop_path_rate", model["drop_path_rate"], 0.0, 1.0)
    for key in ("mlp", "maps_mlp"):
        if not re.fullmatch(r"[1-9]\d*(-[1-9]\d*)*", str(model[key])):
            problems.append(f"model.{key} = {model[key]!r}: expected layer widths joined by "
                            "'-', e.g. 8192-8192-8192")
    if model["fuse_views"] and model["arch"] in RESNET_SPECS:
        problems.append(f"model.fuse_views = true with model.arch={model['arch']}: expected "
                        "false (fusing views changes BatchNorm statistics; ConvNeXt only)")


def check_pretrain_config(cfg: dict) -> None:
    """Raise ``ConfigValueError`` listing every out-of-range value of a merged pretraining
    config (``pretrain.config.load_config``); types were checked when merging."""
    from .backbones import ARCHS

    problems: list[str] = []
    _one_of(problems, "model.arch", cfg["model"]["arch"], ARCHS)
    _check_model(problems, cfg["model"])
    _check_loss(problems, cfg["loss"])
    _check_optim(problems, cfg["optim"])
    _check_crops(problems, cfg["data"], cfg["model"]["arch"])
    _check_data_run(problems, cfg["data"], cfg["run"])
    if problems:
        source = cfg.get("recipe", "config")
        raise ConfigValueError(f"recipe {source}: {len(problems)} bad value(s):\n  - "
                               + "\n  - ".join(problems))


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Prove that the folder ``path`` can be created and written, creating nothing: its
    nearest existing ancestor must be a folder where a probe file can be written (and is
    removed again; permission bits do not stop root, a read-only mount does).
    Raises ``NotADirectoryError`` / ``PermissionError`` naming ``what`` and the path."""
    path = Path(path)
    existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise NotADirectoryError(f"{what} {path}: {existing} is a regular file, not a folder; "
                                 "expected a folder path that can be created")
    probe = existing / f".write-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"{what} {path}: cannot write in {existing} "
                              f"({exc.strerror or exc}); expected a writable folder") from exc
    return path


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """``check_output_dir`` on the file's folder, and ``path`` must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; expected a file path")
    try:
        check_output_dir(path.parent, "folder")
    except OSError as exc:
        raise type(exc)(f"{what} {path}: {exc}") from None
    return path


def check_free_space(path: str | os.PathLike, need_bytes: int, what: str) -> None:
    """The folder ``path`` (or its nearest existing ancestor) must have ``need_bytes`` free:
    a run that finds the disk full at its first checkpoint has lost that work. Raises
    ``OutputWriteError`` naming ``what``, the free and the needed space."""
    path = Path(path)
    existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor))
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise OutputWriteError(errno.ENOSPC, f"{what} {path}: {free / 2**20:.1f} MiB free in "
                               f"{existing}, but this run's checkpoints need about "
                               f"{need_bytes / 2**20:.1f} MiB (the new one is written beside "
                               "the old one, then replaces it); expected a folder with room")
