"""Weights files: the one safe loader and the one detector of what kind of file it is.

``load_state_file`` reads any ``.pth`` with ``weights_only=True``. ``identify`` tells the kinds
apart, for the official loader (``pretrain.official``) and the transfer reader
(``transfer.weights``) alike:

- ``ours-train``: our training checkpoint (``TRAIN_FORMAT``); the whole model,
  backbone under ``backbone.``;
- ``ours-export``: our backbone export (``BACKBONE_FORMAT``); the backbone alone;
- ``mmseg-conversion``: what tools/seg_train.py (into its work dir) and ``tools/convert.py
  --framework mmseg`` write (``MMSEG_FORMAT``); the backbone under ``backbone.``;
- ``official-full``: an official checkpoint ``{epoch, model, optimizer}`` or a bare VICRegL
  state dict (``module.`` removed); the whole model, backbone under ``backbone.``;
- ``torchvision``: a torchvision ResNet state dict; the backbone, ``fc.*`` dropped;
- ``official-backbone``: any other state dict, e.g. an official backbone-only file.

detectron2 ``.pkl`` conversions are plain pickles, not torch files; they are read (arrays
only) by ``transfer.detectron2_side.conversion.read_pkl``.
"""
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The formats of the files this suite writes (``pretrain.checkpoint`` writes the first two,
# ``transfer.mmseg_side.checkpoint`` the third); named here so that telling them apart needs
# no import of their writers.
TRAIN_FORMAT = "vicregl-suite/train-checkpoint/v1"
BACKBONE_FORMAT = "vicregl-suite/backbone/v1"
MMSEG_FORMAT = "vicregl-suite/mmseg-backbone/v1"
PREFIX = "backbone."
WHOLE_MODEL_KINDS = ("ours-train", "official-full")  # heads beside the backbone


def _not_an_optimizer_filter(*_args, **_kwargs):  # pragma: no cover - never called
    raise RuntimeError("placeholder for the official LARS filter; not callable")


# The official LARS pickles its parameter filters (functions) into the optimizer state, which
# weights_only loading refuses. These names, and only these, unpickle to an inert placeholder.
OFFICIAL_PICKLED_FUNCTIONS = ["optimizers.exclude_bias_and_norm",
                              "__main__.exclude_bias_and_norm"]


def load_state_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``; clear errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    allowed = [(_not_an_optimizer_filter, name) for name in OFFICIAL_PICKLED_FUNCTIONS]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: cannot be read as a weights-only torch checkpoint "
                         f"({type(exc).__name__}: {exc})") from exc


def check_finite(state: Mapping, source: str | Path) -> None:
    """Raise ``ValueError`` naming ``source`` and the first tensor (or numpy array) holding NaN
    or inf. Such weights load, convert and evaluate without an error, into wrong numbers (a
    k-NN accuracy above a sane backbone's)."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            bad, total = int((~torch.isfinite(value)).sum()), value.numel()
        elif isinstance(value, np.ndarray) and value.dtype.kind in "fc":
            bad, total = int((~np.isfinite(value)).sum()), value.size
        else:
            continue
        if bad:
            raise ValueError(f"{source}: tensor {key} holds {bad} NaN or inf value(s) of "
                             f"{total}; expected finite weights (a diverged run or a damaged "
                             "file)")


def _split(state: Mapping, prefix: str) -> tuple[dict, list[str]]:
    inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return inside, [k for k in state if not k.startswith(prefix)]


@dataclass
class WeightsFile:
    source: str
    kind: str
    state: dict[str, torch.Tensor]  # as the file keys them, wrappers and DDP's module. removed
    arch: str | None = None  # what our own formats say they hold; None for foreign files
    # what our own formats record of the weights: an export's ``provenance``, a conversion's
    # ``meta["backbone"]``; empty for the other kinds
    provenance: dict = field(default_factory=dict)

    @property
    def whole_model(self) -> bool:
        """Whether ``state`` is a whole VICRegL (backbone and heads), not a backbone alone."""
        return self.kind in WHOLE_MODEL_KINDS

    def backbone(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        """(the backbone tensors under the official names, the file's other keys)."""
        if self.whole_model or self.kind == "mmseg-conversion":
            state, dropped = _split(self.state, PREFIX)
        elif self.kind == "torchvision":
            state = {k: v for k, v in self.state.items() if not k.startswith("fc.")}
            dropped = [k for k in self.state if k.startswith("fc.")]
        else:
            state, dropped = dict(self.state), []
        if not state:
            raise ValueError(f"{self.source}: no backbone tensors found (read as {self.kind})")
        check_finite(state, self.source)
        return state, dropped


def _foreign_state(raw: Mapping) -> dict:
    """An official or torchvision file's tensors: the ``model`` entry when there is one, DDP's
    ``module.`` removed."""
    state = raw["model"] if isinstance(raw.get("model"), Mapping) else raw
    return {k.removeprefix("module.") if isinstance(k, str) else k: v for k, v in state.items()}


def file_kind(raw: Any) -> str | None:
    """The kind of a loaded file (see the module docstring); None when it is not a mapping."""
    if not isinstance(raw, Mapping):
        return None
    meta = raw.get("meta")
    if raw.get("format") == BACKBONE_FORMAT:
        return "ours-export"
    if raw.get("format") == TRAIN_FORMAT:
        return "ours-train"
    if isinstance(meta, Mapping) and meta.get("format") == MMSEG_FORMAT:
        return "mmseg-conversion"
    state = _foreign_state(raw)
    if any(isinstance(k, str) and k.startswith(PREFIX) for k in state):
        return "official-full"
    return "torchvision" if "fc.weight" in state else "official-backbone"


def identify(raw: Any, source: str | Path) -> WeightsFile:
    """``file_kind`` and the tensors where that kind keeps them; raises ``ValueError`` naming
    ``source`` when there are none."""
    source, kind = str(source), file_kind(raw)
    if kind is None:
        raise ValueError(f"{source}: expected a state dict or checkpoint, got {type(raw).__name__}")
    provenance = {}
    if kind == "ours-export":
        state, arch = raw.get("state_dict"), raw.get("arch")
        provenance = raw.get("provenance")
    elif kind == "ours-train":
        state, arch = raw.get("model"), raw.get("arch")
    elif kind == "mmseg-conversion":
        state, arch = raw.get("state_dict"), raw["meta"].get("arch")
        provenance = raw["meta"].get("backbone")
    else:
        state, arch = _foreign_state(raw), None
    if (not isinstance(state, Mapping) or not state
            or not all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ValueError(f"{source}: no tensors found (read as {kind}); expected a state dict "
                         "of tensors, an official checkpoint with a 'model' entry or a file "
                         "written by this suite")
    return WeightsFile(source, kind, dict(state), arch,
                       dict(provenance) if isinstance(provenance, Mapping) else {})


def read_weights_file(path: str | Path) -> WeightsFile:
    """``identify(load_state_file(path), path)``."""
    return identify(load_state_file(path), path)
