"""Compatibility with the official VICRegL code (facebookresearch/VICRegL, commit 803ae4c).

- ``build_from_official_args(args)`` builds the model ``main_vicregl.py`` builds, from an
  argparse namespace or a dict with the official argument names;
- ``load_official_checkpoint(model, path_or_state_dict)`` loads an official full checkpoint
  (``{epoch, model, optimizer}``, ``module.``-prefixed) or a backbone-only file, strictly and
  with ``weights_only`` loading.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .model import VICRegL

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


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def summarise_keys(keys: list[str]) -> str:
    """The first five keys, and how many there are in all when more."""
    return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")


def state_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
                   ) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape-mismatched) keys of ``state`` against ``own``, sorted."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    return missing, unexpected, shape


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error naming ``source`` and the
    offending keys."""
    own = module.state_dict()
    missing, unexpected, shape = state_mismatch(own, state)
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing keys: {summarise_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {summarise_keys(unexpected)}")
        if shape:
            parts.append("shape mismatch: " + summarise_keys(
                [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape]))
        raise ValueError(f"{source} does not fit {type(module).__name__}"
                         f"{' ' + module.arch if hasattr(module, 'arch') else ''}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def load_official_checkpoint(model: nn.Module, path_or_state_dict) -> LoadReport:
    """Load official weights into ``model`` (a ``VICRegL`` or a bare backbone), strictly.

    Accepts a full checkpoint (``{"epoch", "model", "optimizer"}`` with ``module.`` keys), a
    bare VICRegL state dict, or a backbone-only state dict (no prefix). The one tolerated gap:
    a full checkpoint without any ``maps_projector`` keys (the released
    ``resnet50_alpha0.75_fullckpt`` has none, official issue #13); the report names it.
    Anything else missing, unexpected or of the wrong shape raises, naming the keys.
    """
    if isinstance(path_or_state_dict, (str, Path)):
        source, state = str(path_or_state_dict), load_state_file(path_or_state_dict)
    else:
        source, state = "state dict", path_or_state_dict
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: expected a state dict of tensors or an official checkpoint "
                         "with a 'model' entry")
    state = _strip(state, "module.")
    is_full = any(k.startswith("backbone.") for k in state)
    backbone = model.backbone if hasattr(model, "backbone") else model
    if not is_full:
        load_strict(backbone, state, source)
        return LoadReport(source, "backbone", len(state))
    if backbone is model:  # a bare backbone given a full checkpoint: take its backbone part
        sub = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        load_strict(model, sub, source)
        return LoadReport(source, "full", len(sub))
    skipped = []
    if getattr(model, "maps_projector", None) is not None and not any(
            k.startswith("maps_projector.") for k in state):
        skipped.append("maps_projector")
        state = dict(state, **{f"maps_projector.{k}": v
                               for k, v in model.maps_projector.state_dict().items()})
    load_strict(model, state, source)
    return LoadReport(source, "full", len(state) - sum(
        len(getattr(model, m).state_dict()) for m in skipped), skipped)
