"""Proof that a converted backbone file really landed in a detectron2 model.

detectron2 loads ``.pkl`` files by suffix matching and only LOGS what did not match, which is
how a transfer run ends up fine-tuning a half-random backbone. ``check_backbone_loaded`` runs
after loading and raises unless (1) every tensor of the file matched a model key, (2) the model
holds that tensor bit for bit, and (3) no trunk parameter of the model was left out of the
file: ResNet ``stem.*`` and ``res{2..5}.{block}.*`` wherever they sit (FPN bottom-up, C4
backbone, C4 res5 head), ConvNeXt ``convnext.{downsample_layers,stages}.*``, ``resnet_nano``
``resnet_nano.{conv1,bn1,layer1..4}.*``. New layers (FPN or simple feature pyramid, heads, the
C4 extra norm, the ConvNeXt output norms) are expected to be missing.
"""
import logging
import re

import torch
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

from .conversion import read_pkl

_TRUNK = re.compile(r"(^|\.)(stem\.|res[2-5]\.\d+\.|convnext\.(downsample_layers|stages)\.|"
                    r"resnet_nano\.(conv1|bn1|layer[1-4])\.)")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model  # DistributedDataParallel


def check_backbone_loaded(model: torch.nn.Module, pkl_path: str) -> str:
    """Raise ``RuntimeError`` naming the keys unless the file at ``pkl_path`` is fully in
    ``model``; return a one-line summary for the log."""
    data = read_pkl(pkl_path)
    ckpt = {k: torch.as_tensor(v) for k, v in data["model"].items()}
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    matcher_log = logging.getLogger("detectron2.checkpoint.c2_model_loading")
    level = matcher_log.level
    matcher_log.setLevel(logging.WARNING)  # its match table was already logged by the load
    try:
        aligned = align_and_update_state_dicts(state, dict(ckpt), c2_conversion=False)
    finally:
        matcher_log.setLevel(level)
    unmatched = sorted(k for k in aligned if k not in state)
    differing = sorted(k for k, v in aligned.items()
                       if k in state and not torch.equal(state[k], v.to(state[k].dtype)))
    uncovered = sorted(k for k in state if _TRUNK.search(k) and k not in aligned
                       and not k.endswith("num_batches_tracked"))
    problems = []
    if unmatched:
        problems.append(f"{len(unmatched)} file tensors matched no model key (or had another "
                        f"shape): {', '.join(unmatched[:8])}")
    if differing:
        problems.append(f"{len(differing)} model tensors differ from the file after loading: "
                        f"{', '.join(differing[:8])}")
    if uncovered:
        problems.append(f"{len(uncovered)} backbone tensors of the model are not in the file "
                        f"(wrong depth?): {', '.join(uncovered[:8])}")
    if problems:
        raise RuntimeError(f"{pkl_path} did not load completely: " + "; ".join(problems))
    return (f"{pkl_path}: all {len(ckpt)} backbone tensors loaded and checked equal; no "
            "backbone tensor of the model left out")
