"""State-dict key checks: which keys of a file are missing, unexpected or of the wrong shape
for a module, said in one error that names the file and the keys. Every strict load of the
suite (pretraining resume, the official files, the transfer reader, mmseg's backbone) goes
through here. Standard library only: tensors are only asked for ``.shape``."""
from collections.abc import Mapping
from typing import Any


def summarise_keys(keys: list[str]) -> str:
    """The first five keys, and how many there are in all when more."""
    return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")


def state_mismatch(own: Mapping[str, Any], state: Mapping[str, Any]
                   ) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape-mismatched) keys of ``state`` against ``own``, sorted."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    return missing, unexpected, shape


def describe_mismatch(own: Mapping[str, Any], state: Mapping[str, Any],
                      missing_as: str = "missing keys",
                      unexpected_as: str = "unexpected keys") -> list[str]:
    """One phrase per kind of mismatch (none when ``state`` fits ``own``); the callers name
    the two sides in their own words (``missing_as``, ``unexpected_as``)."""
    missing, unexpected, shape = state_mismatch(own, state)
    parts = []
    if missing:
        parts.append(f"{missing_as}: {summarise_keys(missing)}")
    if unexpected:
        parts.append(f"{unexpected_as}: {summarise_keys(unexpected)}")
    if shape:
        parts.append("shape mismatch: " + summarise_keys(
            [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape]))
    return parts


def load_strict(module, state: Mapping[str, Any], source: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error naming ``source`` and the
    offending keys."""
    parts = describe_mismatch(module.state_dict(), state)
    if parts:
        raise ValueError(f"{source} does not fit {type(module).__name__}"
                         f"{' ' + module.arch if hasattr(module, 'arch') else ''}: "
                         + "; ".join(parts))
    module.load_state_dict(state, strict=True)
