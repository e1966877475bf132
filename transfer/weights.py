"""The one strict weights reader: any supported source -> a backbone state dict.

Sources (``source`` argument), told apart by ``pretrain.weight_files.identify``:
- our backbone export or training checkpoint, or an mmseg conversion (``transfer.conversion``);
- the official VICRegL files: backbone-only state dicts and full ``{epoch, model, optimizer}``
  checkpoints (``module.backbone.*``);
- torchvision ResNet state dicts (the supervised baseline; ``fc.*`` is dropped and reported);
- ``random`` or ``random:SEED``: a seeded initialisation of the architecture (the floor).

Everything is loaded with ``weights_only=True`` and checked against the named architecture:
a missing, unexpected or wrongly shaped key is an error that names the file and the keys.
"""
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pretrain.backbones import build_backbone
from pretrain.checkpoint import state_dict_sha256
from pretrain.common.arguments import random_seed
from pretrain.common.provenance import git_sha
from pretrain.common.state_keys import load_strict
from pretrain.weight_files import read_weights_file


@dataclass
class BackboneWeights:
    arch: str
    state_dict: dict[str, torch.Tensor]
    source: str
    kind: str  # a pretrain.weight_files kind, or "random"
    dropped: list[str] = field(default_factory=list)  # keys present in the file but not backbone
    sha256: str = ""
    recorded: dict = field(default_factory=dict)  # what our file says of itself (provenance)

    def info(self) -> dict:
        """The ``backbone`` entry of metrics.json; with ``bn_recalibration`` when the file's
        BatchNorm statistics were recomputed (tools/recalibrate_bn.py)."""
        info = {"arch": self.arch, "source": self.source, "kind": self.kind,
                "sha256": self.sha256}
        if self.recorded.get("bn_recalibration"):
            info["bn_recalibration"] = dict(self.recorded["bn_recalibration"])
        return info

    def provenance(self) -> dict:
        """What a converted file records of its weights (the ``meta`` of mmseg's): ``info``,
        the coverage line and the commit of the code that converted it."""
        return {"arch": self.arch, "backbone": self.info(), "coverage": self.coverage(),
                "git_sha": git_sha()}

    def coverage(self) -> str:
        text = (f"{self.source} [{self.kind}] -> {self.arch}: {len(self.state_dict)} of "
                f"{len(self.state_dict)} backbone tensors matched")
        if self.dropped:
            text += f"; not backbone, dropped: {_summarise(self.dropped)}"
        return text


def _summarise(keys: list[str]) -> str:
    heads = sorted({k.split(".")[0] for k in keys})
    return f"{len(keys)} tensors ({', '.join(heads)})"


def read_backbone(source: str | Path, arch: str, seed: int = 0) -> BackboneWeights:
    """Read ``source`` as the backbone of ``arch``, strictly. See the module docstring."""
    reference = build_backbone(arch)
    source = str(source)
    seed = random_seed(source, seed)
    if seed is not None:
        torch.manual_seed(seed)
        state = build_backbone(arch).state_dict()
        return BackboneWeights(arch, state, f"random:{seed}", "random",
                               sha256=state_dict_sha256(state))
    found = read_weights_file(source)
    if found.arch is not None and found.arch != arch:
        held = (f"is a {found.arch} training checkpoint" if found.kind == "ours-train"
                else f"holds a {found.arch} backbone")
        raise ValueError(f"{source} {held}, not {arch}")
    state, dropped = found.backbone()
    load_strict(reference, state, f"{source} (read as {found.kind})")
    state = {k: v.detach().clone() for k, v in state.items()}
    return BackboneWeights(arch, state, source, found.kind, dropped, state_dict_sha256(state),
                           found.provenance)
