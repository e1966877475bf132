"""Backbone weights -> detectron2's ``.pkl`` format. Does not import detectron2.

Input is a ``BackboneWeights`` from ``transfer.weights.read_backbone`` (our exports and training
checkpoints, the official VICRegL files, torchvision state dicts, ``random:SEED``), so the keys
are torchvision's (ResNet) or the pretraining module's (ConvNeXt). ``convert_backbone`` picks
the converter by architecture. ResNet renaming, as MoCo / DenseCL / PixPro do:

    conv1 / bn1                      -> stem.conv1 / stem.conv1.norm
    layer{1..4}.{b}.conv{k} / bn{k}  -> res{2..5}.{b}.conv{k} / conv{k}.norm
    layer{i}.{b}.downsample.0 / .1   -> res{i+1}.{b}.shortcut / shortcut.norm

ConvNeXt keys only gain the ``convnext.`` prefix of ``backbone.Detectron2ConvNeXt``
(``stages.0.0.dwconv.weight`` -> ``convnext.stages.0.0.dwconv.weight``), and ``resnet_nano``
keys (the CPU demo's ResNet: torchvision names, but not detectron2's ResNet) likewise the
``resnet_nano.`` prefix of ``backbone.Detectron2ResNetNano`` (``layer1.0.conv1.weight`` ->
``resnet_nano.layer1.0.conv1.weight``).

Values are copied unchanged: the detectron2 model must then run with torchvision conventions
(``INPUT.FORMAT RGB``, torchvision mean/std, ``RESNETS.STRIDE_IN_1X1 False``; the configs in
``configs/detection/`` do). Dropped, and listed as dropped in the key map: BatchNorm
``num_batches_tracked`` counters (not weights; detectron2's FrozenBN has none) and ConvNeXt's
final ``norm.*`` (pretraining's token norm, which detection does not use). Every other key must
be converted or conversion fails.
"""
import os
import pickle
import re
from pathlib import Path

import numpy as np

from pretrain.backbones.resnet import NANO_SPECS
from pretrain.common.files import atomic_open

AUTHOR = "vicregl-suite"  # the ``__author__`` of our files; detectron2 logs it when loading
_BN = r"(weight|bias|running_mean|running_var)"
_COUNTER = re.compile(r"(^|\.)num_batches_tracked$")
_RULES = (
    (re.compile(r"^conv1\.weight$"), lambda m: "stem.conv1.weight"),
    (re.compile(rf"^bn1\.{_BN}$"), lambda m: f"stem.conv1.norm.{m[1]}"),
    (re.compile(r"^layer([1-4])\.(\d+)\.conv([1-3])\.weight$"),
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(rf"^layer([1-4])\.(\d+)\.bn([1-3])\.{_BN}$"),
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
    (re.compile(r"^layer([1-4])\.(\d+)\.downsample\.0\.weight$"),
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
    (re.compile(rf"^layer([1-4])\.(\d+)\.downsample\.1\.{_BN}$"),
     lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
)
_CONVNEXT_TRUNK = re.compile(r"^(downsample_layers|stages)\.")
_CONVNEXT_FINAL_NORM = re.compile(r"^norm\.(weight|bias)$")
_NANO_TRUNK = re.compile(r"^(conv1|bn1|layer[1-4])\.")
NANO_PREFIX = "resnet_nano."  # the attribute of backbone.Detectron2ResNetNano holding the trunk
DROPPED = ""  # the target name, in the key map, of a key deliberately not converted
# Why a key is dropped: (pattern, text on its key-map line, plural for the count line)
_DROP_REASONS = ((_COUNTER, "BatchNorm step counter", "counters"),
                 (_CONVNEXT_FINAL_NORM, "pretraining's final norm, unused by detection",
                  "final-norm tensors"))


def detectron2_name(key: str) -> str | None:
    """The detectron2 name of a torchvision ResNet key; ``None`` when no rule applies."""
    for pattern, rename in _RULES:
        match = pattern.match(key)
        if match:
            return rename(match)
    return None


def _convert(weights, rename, dropped) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Apply ``rename`` (key -> detectron2 name or None) to every key not matched by
    ``dropped``; see ``convert_backbone``."""
    model_dict: dict[str, np.ndarray] = {}
    key_map: list[tuple[str, str]] = []
    unmatched = []
    for key, tensor in weights.state_dict.items():
        if dropped.search(key):
            key_map.append((key, DROPPED))
            continue
        name = rename(key)
        if name is None:
            unmatched.append(key)
            continue
        if name in model_dict:  # impossible with the rules above; guards future edits
            raise ValueError(f"{weights.source}: two keys map to {name}")
        model_dict[name] = tensor.detach().cpu().float().numpy().copy()
        key_map.append((key, name))
    if unmatched:
        raise ValueError(f"{weights.source} ({weights.arch}): {len(unmatched)} keys have no "
                         f"detectron2 name: {', '.join(unmatched[:10])}"
                         + (" ..." if len(unmatched) > 10 else ""))
    return model_dict, key_map


def convert_resnet(weights) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """A ResNet ``BackboneWeights`` in detectron2's ResNet names; see ``convert_backbone``."""
    if not weights.arch.startswith("resnet") or weights.arch in NANO_SPECS:
        raise ValueError(f"{weights.source}: convert_resnet needs a ResNet, got {weights.arch} "
                         "(convert_backbone converts every architecture)")
    return _convert(weights, detectron2_name, _COUNTER)


def convert_convnext(weights) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """A ConvNeXt ``BackboneWeights`` under ``Detectron2ConvNeXt``'s ``convnext.`` prefix,
    without the final norm; see ``convert_backbone``."""
    if not weights.arch.startswith("convnext"):
        raise ValueError(f"{weights.source}: convert_convnext needs a ConvNeXt, got "
                         f"{weights.arch} (convert_backbone converts every architecture)")
    return _convert(weights, lambda key: f"convnext.{key}" if _CONVNEXT_TRUNK.match(key)
                    else None, _CONVNEXT_FINAL_NORM)


def convert_nano(weights) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """A ``resnet_nano`` ``BackboneWeights`` under ``Detectron2ResNetNano``'s ``resnet_nano.``
    prefix (BatchNorm counters dropped); see ``convert_backbone``."""
    if weights.arch not in NANO_SPECS:
        raise ValueError(f"{weights.source}: convert_nano needs {', '.join(NANO_SPECS)}, got "
                         f"{weights.arch} (convert_backbone converts every architecture)")
    return _convert(weights, lambda key: NANO_PREFIX + key if _NANO_TRUNK.match(key) else None,
                    _COUNTER)


def convert_backbone(weights) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Convert a ``BackboneWeights`` (ResNet, ``resnet_nano`` or ConvNeXt) to detectron2 names.

    Returns ``(model_dict, key_map)``: ``model_dict`` maps detectron2 names to float numpy
    arrays; ``key_map`` lists every source key with its target, in source order (target
    ``DROPPED`` for the keys deliberately left out). Raises ``ValueError`` naming the source
    and the keys when any key has no detectron2 name.
    """
    if weights.arch.startswith("convnext"):
        return convert_convnext(weights)
    if weights.arch in NANO_SPECS:
        return convert_nano(weights)
    return convert_resnet(weights)


def _drop_reason(key: str) -> tuple[str, str]:
    return next((why, plural) for pattern, why, plural in _DROP_REASONS if pattern.search(key))


def format_key_map(key_map: list[tuple[str, str]]) -> str:
    """The key map as text, one ``source -> target`` line per key (a dropped key says why),
    and a count line (e.g. ``100 tensors converted, 20 counters dropped, 0 unmatched``)."""
    width = max((len(src) for src, _ in key_map), default=0)
    lines = [f"{src:<{width}} -> "
             + (dst if dst != DROPPED else f"(dropped: {_drop_reason(src)[0]})")
             for src, dst in key_map]
    dropped: dict[str, int] = {}
    for src, dst in key_map:
        if dst == DROPPED:
            plural = _drop_reason(src)[1]
            dropped[plural] = dropped.get(plural, 0) + 1
    counts = [f"{n} {plural} dropped" for plural, n in dropped.items()] or ["0 counters dropped"]
    converted = sum(dst != DROPPED for _, dst in key_map)
    lines.append(f"{converted} tensors converted, {', '.join(counts)}, 0 unmatched "
                 f"(of {len(key_map)} keys)")
    return "\n".join(lines)


def write_pkl(path: str | Path, model_dict: dict[str, np.ndarray],
              provenance: dict | None = None) -> Path:
    """Write ``model_dict`` as a detectron2 weights file (atomically).

    The file holds ``{"model", "__author__", "matching_heuristics": True}``: detectron2 then
    matches our names by suffix (``res2.0.conv1.weight`` -> ``backbone.bottom_up.res2...`` in
    FPN models, ``roi_heads.res5...`` in C4 models). ``provenance`` (``BackboneWeights.info()``)
    is stored under ``__vicregl__`` for metrics.json; detectron2 ignores that key.
    """
    bad = [k for k, v in model_dict.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise TypeError(f"{path}: values must be numpy arrays; not for {', '.join(bad[:5])}")
    path = Path(path)
    data = {"model": model_dict, "__author__": AUTHOR, "matching_heuristics": True}
    if provenance is not None:
        data["__vicregl__"] = dict(provenance)
    with atomic_open(path, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, strings, numbers and numpy arrays, nothing that can run code."""

    _ALLOWED = {("collections", "OrderedDict")}
    _NUMPY = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED or (module.startswith("numpy") and name in self._NUMPY):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def read_pkl(path: str | Path) -> dict:
    """Read a detectron2 ``.pkl`` weights file safely (arrays only) and check its layout."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _ArraysOnly(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable detectron2 .pkl weights file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{path}: expected a dict with a 'model' dict of arrays "
                         "(detectron2's .pkl format)")
    return data


def check_weights_file(path: str) -> None:
    """Check a local ``MODEL.WEIGHTS`` file before detectron2 loads it. detectron2 reads a
    ``.pkl`` with plain ``pickle.load`` (a crafted file runs code), so a ``.pkl`` must pass
    the arrays-only ``read_pkl`` first; any other file must load with ``weights_only``.
    Non-local names (``detectron2://...``) are left to detectron2. NaN or inf weights are
    refused too. Raises ``ValueError`` naming the file."""
    from pretrain.weight_files import check_finite, load_state_file

    if not path or not os.path.isfile(path):
        return
    if path.endswith(".pkl"):
        check_finite(read_pkl(path)["model"], path)
        return
    raw = load_state_file(path)
    if isinstance(raw, dict):  # a detector checkpoint ({"model": ...}) or a state dict
        check_finite(raw["model"] if isinstance(raw.get("model"), dict) else raw, path)
