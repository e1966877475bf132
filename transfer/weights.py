"""The one strict weights reader: any supported source -> a backbone state dict.

Sources (``source`` argument):
- our backbone export (``pretrain.checkpoint.BACKBONE_FORMAT``) or training checkpoint;
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
from pretrain.checkpoint import BACKBONE_FORMAT, TRAIN_FORMAT, state_dict_sha256
from pretrain.official import load_state_file, load_strict


@dataclass
class BackboneWeights:
    arch: str
    state_dict: dict[str, torch.Tensor]
    source: str
    kind: str  # ours-export, ours-train, official-backbone, official-full, torchvision, random
    dropped: list[str] = field(default_factory=list)  # keys present in the file but not backbone
    sha256: str = ""

    def info(self) -> dict:
        """The ``backbone`` entry of metrics.json."""
        return {"arch": self.arch, "source": self.source, "kind": self.kind, "sha256": self.sha256}

    def coverage(self) -> str:
        text = (f"{self.source} [{self.kind}] -> {self.arch}: {len(self.state_dict)} of "
                f"{len(self.state_dict)} backbone tensors matched")
        if self.dropped:
            text += f"; not backbone, dropped: {_summarise(self.dropped)}"
        return text


def _summarise(keys: list[str]) -> str:
    heads = sorted({k.split(".")[0] for k in keys})
    return f"{len(keys)} tensors ({', '.join(heads)})"


def _split(state: dict, prefix: str) -> tuple[dict, list[str]]:
    inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return inside, [k for k in state if not k.startswith(prefix)]


def read_backbone(source: str | Path, arch: str, seed: int = 0) -> BackboneWeights:
    """Read ``source`` as the backbone of ``arch``, strictly. See the module docstring."""
    reference = build_backbone(arch)
    source = str(source)
    if source == "random" or source.startswith("random:"):
        seed = int(source.split(":", 1)[1]) if ":" in source else seed
        torch.manual_seed(seed)
        state = build_backbone(arch).state_dict()
        return BackboneWeights(arch, state, f"random:{seed}", "random",
                               sha256=state_dict_sha256(state))
    raw = load_state_file(source)
    dropped: list[str] = []
    if isinstance(raw, dict) and raw.get("format") == BACKBONE_FORMAT:
        kind, state = "ours-export", raw["state_dict"]
        if raw.get("arch") != arch:
            raise ValueError(f"{source} holds a {raw.get('arch')} backbone, not {arch}")
    elif isinstance(raw, dict) and raw.get("format") == TRAIN_FORMAT:
        kind = "ours-train"
        if raw.get("arch") != arch:
            raise ValueError(f"{source} is a {raw.get('arch')} training checkpoint, not {arch}")
        state, dropped = _split(raw["model"], "backbone.")
    elif isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        kind = "official-full"
        model = {k.removeprefix("module."): v for k, v in raw["model"].items()}
        state, dropped = _split(model, "backbone.")
    elif isinstance(raw, dict) and any(k.startswith("backbone.") for k in raw):
        kind = "official-full"
        state, dropped = _split({k.removeprefix("module."): v for k, v in raw.items()}, "backbone.")
    elif isinstance(raw, dict) and "fc.weight" in raw and arch.startswith("resnet"):
        kind = "torchvision"
        state = {k: v for k, v in raw.items() if not k.startswith("fc.")}
        dropped = [k for k in raw if k.startswith("fc.")]
    elif isinstance(raw, dict):
        kind, state = "official-backbone", raw
    else:
        raise ValueError(f"{source}: expected a state dict or checkpoint, got {type(raw).__name__}")
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: no backbone tensors found (read as {kind})")
    load_strict(reference, state, f"{source} (read as {kind})")
    state = {k: v.detach().clone() for k, v in state.items()}
    return BackboneWeights(arch, state, source, kind, dropped, state_dict_sha256(state))
