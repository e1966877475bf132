"""The checkpoint MMSegmentation loads, and the strict check that it was loaded.

Format written by ``transfer.conversion`` (tools/seg_train.py into its work dir, tools/convert.py
by hand; loadable with ``weights_only``)::

    {"state_dict": {"backbone.<official key>": tensor, ...},
     "meta": {"format": MMSEG_FORMAT, **BackboneWeights.provenance()}}
    # provenance: {"arch", "backbone": BackboneWeights.info(), "coverage", "git_sha"}

A config loads it with ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``
on the backbone. mmengine's ``Pretrained`` loads with ``strict=False`` and only logs what did
not match, so ``verify_backbone`` (run by ``VerifyPretrainedHook`` before the first iteration)
compares the backbone, tensor by tensor, with the weights the run read and converted, and
raises on any difference.

Key maps: the official names are kept. mmseg's ``ResNet`` (``type='ResNet'``, V1b, pytorch
style) has exactly torchvision's names; ``VICRegLConvNeXt`` is the pretraining module. So the
only change is the ``backbone.`` prefix; ``mmseg_model_keys`` proves it by a strict load.
"""
from pathlib import Path

import torch

from pretrain.backbones import ARCHS, CONVNEXT_SPECS, NANO_SPECS, RESNET_SPECS
from pretrain.checkpoint import atomic_save
from pretrain.common.state_keys import describe_mismatch, load_strict, summarise_keys
from pretrain.weight_files import MMSEG_FORMAT, PREFIX


def mmseg_backbone_cfg(arch: str, **overrides) -> dict:
    """The mmseg backbone config that holds ``arch`` with the official key names."""
    if arch in RESNET_SPECS:
        cfg = dict(type="ResNet", depth=int(arch.removeprefix("resnet")), style="pytorch")
    elif arch in CONVNEXT_SPECS:
        cfg = dict(type="VICRegLConvNeXt", arch=arch)
    elif arch in NANO_SPECS:
        cfg = dict(type="VICRegLResNet", arch=arch)
    else:
        raise ValueError(f"no mmseg backbone for {arch!r}; expected one of {', '.join(ARCHS)}")
    cfg.update(overrides)
    return cfg


def arch_of_backbone_cfg(cfg: dict) -> str:
    """The official architecture name a config's backbone builds (inverse of the above)."""
    kind = cfg.get("type")
    if kind in ("ResNet", "mmseg.ResNet"):
        return f"resnet{cfg.get('depth')}"
    if kind == "VICRegLConvNeXt":
        return cfg.get("arch", "convnext_small")
    if kind == "VICRegLResNet":
        return cfg.get("arch", "resnet_nano")
    raise ValueError(f"backbone type {kind!r} takes no converted VICRegL checkpoint; use "
                     "type='ResNet' (not ResNetV1c: its deep stem does not fit torchvision "
                     "weights), type='VICRegLConvNeXt' or type='VICRegLResNet' (resnet_nano)")


def convert(weights) -> tuple[dict, dict[str, str]]:
    """A ``transfer.weights.BackboneWeights`` -> (mmseg checkpoint, key map source->target)."""
    key_map = {key: PREFIX + key for key in weights.state_dict}
    checkpoint = {
        "state_dict": {key_map[k]: v.detach().cpu().contiguous()
                       for k, v in weights.state_dict.items()},
        "meta": {"format": MMSEG_FORMAT, **weights.provenance()},
    }
    return checkpoint, key_map


def mmseg_model_keys(arch: str, state_dict: dict[str, torch.Tensor]) -> int:
    """Build the mmseg backbone for ``arch`` and load ``state_dict`` (no prefix) strictly;
    returns the number of tensors loaded. Imports mmseg and registers ``VICRegLConvNeXt``
    (its module only: ``register`` imports the hooks, which import this module)."""
    from mmseg.registry import MODELS

    from . import convnext, resnet_nano  # noqa: F401  (registers the suite's backbones)

    backbone = MODELS.build(mmseg_backbone_cfg(arch))
    load_strict(backbone, state_dict, f"the {arch} state dict (for mmseg)")
    return len(state_dict)


def write_checkpoint(path: str | Path, weights) -> dict[str, str]:
    checkpoint, key_map = convert(weights)
    atomic_save(checkpoint, path)
    return key_map


def format_key_map(key_map: dict[str, str]) -> str:
    """One ``source -> target`` line per tensor, then the count line."""
    width = max(len(src) for src in key_map)
    lines = [f"{src:<{width}} -> {dst}" for src, dst in key_map.items()]
    return "\n".join(lines + [f"{len(key_map)} tensors renamed, 0 unmatched"])


def verify_backbone(backbone: torch.nn.Module, state: dict[str, torch.Tensor],
                    source: str) -> str:
    """Raise unless ``backbone`` holds exactly ``state`` (official key names, what the run
    read from ``source``): same keys, same shapes, equal values. Compared in memory: the
    converted file is not read again. Returns a one-line summary for the log."""
    own = backbone.state_dict()
    differ = [k for k in sorted(set(own) & set(state)) if own[k].shape == state[k].shape
              and not torch.equal(own[k].detach().cpu(), state[k].to(own[k].dtype))]
    parts = describe_mismatch(own, state,
                              missing_as="backbone tensors not in the weights (left at random "
                                         "init)",
                              unexpected_as="weights the backbone does not have")
    if differ:
        parts.append(f"values differ after loading: {summarise_keys(differ)}")
    if parts:
        raise ValueError(f"pretrained weights {source} do not fit the backbone "
                         f"{type(backbone).__name__}: " + "; ".join(parts))
    return (f"backbone {type(backbone).__name__} holds all {len(own)} tensors of {source}, "
            "values checked equal")
