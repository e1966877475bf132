"""Compatibility with the official VICRegL code (facebookresearch/VICRegL, commit 803ae4c).

- ``build_from_official_args(args)`` builds the model ``main_vicregl.py`` builds, from an
  argparse namespace or a dict with the official argument names;
- ``load_official_checkpoint(model, path_or_state_dict)`` loads an official full checkpoint
  (``{epoch, model, optimizer}``, ``module.``-prefixed) or a backbone-only file, strictly and
  with ``weights_only`` loading; which kind a file is, ``pretrain.weight_files.identify`` says.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from .common.state_keys import load_strict
from .model import VICRegL
from .weight_files import identify, read_weights_file

OFFICIAL_DEFAULTS: dict[str, Any] = dict(
    arch="convnext_small", mlp="8192-8192-8192", maps_mlp="512-512-512", alpha=0.75,
    num_matches=(20, 4), l2_all_matches=1, inv_coeff=25.0, var_coeff=25.0, cov_coeff=1.0,
    drop_path_rate=0.1, layer_scale_init_value=0.0, num_classes=1000)


def _official_value(args, name: str):
    if isinstance(args, Mapping):
        return args.get(name, OFFICIAL_DEFAULTS[name])
    return getattr(args, name, OFFICIAL_DEFAULTS[name])


def _parse_matches(value) -> tuple[int, int]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    matches = tuple(int(v) for v in value)
    if len(matches) != 2:
        raise ValueError(f"num_matches needs two values (large, small), got {value!r}")
    return matches


def build_from_official_args(args) -> VICRegL:
    """The official ``VICRegL(args)``; missing names take the official defaults (note the
    official ``l2_all_matches=1``). ``num_classes`` (default 1000) sizes the online probe."""
    get = lambda name: _official_value(args, name)  # noqa: E731
    fast_vc_reg = args.get("fast_vc_reg", 0) if isinstance(args, Mapping) else getattr(args, "fast_vc_reg", 0)
    if int(fast_vc_reg):
        raise ValueError("fast_vc_reg is not supported (it crashes in the official code)")
    return VICRegL(
        arch=get("arch"), mlp_spec=get("mlp"), maps_mlp_spec=get("maps_mlp"),
        alpha=float(get("alpha")), num_matches=_parse_matches(get("num_matches")),
        l2_all_matches=bool(int(get("l2_all_matches"))), inv_coeff=float(get("inv_coeff")),
        var_coeff=float(get("var_coeff")), cov_coeff=float(get("cov_coeff")),
        num_classes=int(get("num_classes")), drop_path_rate=float(get("drop_path_rate")),
        layer_scale_init_value=float(get("layer_scale_init_value")))


@dataclass
class LoadReport:
    source: str
    kind: str  # "full" or "backbone"
    loaded: int
    skipped_modules: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"{self.source}: loaded {self.loaded} tensors ({self.kind} checkpoint)"
        if self.skipped_modules:
            text += f"; not in the file, left at initialisation: {', '.join(self.skipped_modules)}"
        return text


def load_official_checkpoint(model: nn.Module, path_or_state_dict) -> LoadReport:
    """Load official weights into ``model`` (a ``VICRegL`` or a bare backbone), strictly.

    Accepts a full checkpoint (``{"epoch", "model", "optimizer"}`` with ``module.`` keys), a
    bare VICRegL state dict, a backbone-only state dict (no prefix), or any other file
    ``pretrain.weight_files.identify`` knows (a bare backbone takes the file's backbone part,
    a whole model the heads too when the file has them). The one tolerated gap:
    a full checkpoint without any ``maps_projector`` keys (the released
    ``resnet50_alpha0.75_fullckpt`` has none, official issue #13); the report names it.
    Anything else missing, unexpected or of the wrong shape raises, naming the keys.
    """
    if isinstance(path_or_state_dict, (str, Path)):
        found = read_weights_file(path_or_state_dict)
    else:
        found = identify(path_or_state_dict, "state dict")
    source, backbone = found.source, model.backbone if hasattr(model, "backbone") else model
    if not found.whole_model or backbone is model:  # a bare backbone takes a file's backbone
        state, _ = found.backbone()
        load_strict(backbone, state, source)
        return LoadReport(source, "full" if found.whole_model else "backbone", len(state))
    state, skipped = found.state, []
    if getattr(model, "maps_projector", None) is not None and not any(
            k.startswith("maps_projector.") for k in state):
        skipped.append("maps_projector")
        state = dict(state, **{f"maps_projector.{k}": v
                               for k, v in model.maps_projector.state_dict().items()})
    load_strict(model, state, source)
    return LoadReport(source, "full", len(state) - sum(
        len(getattr(model, m).state_dict()) for m in skipped), skipped)
