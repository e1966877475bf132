"""Bad files for the reliability tests (docs/reliability.md), built from a good one.

``PAYLOAD`` pickles to a call of ``open(marker, "w")``: unpickling it with plain pickle
creates ``marker``. The tests check that no entry point ever does.
"""
import builtins
import os
import pickle
from pathlib import Path

import torch

KINDS = ("truncated", "zero_bytes", "random_bytes", "payload")


class Payload:
    """Unpickles by calling ``open(marker, "w")``: a file appears iff the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def payload_is_live(tmp: Path) -> bool:
    """Plain pickle really runs the payload (so its absence elsewhere means something)."""
    marker = tmp / "live_check_marker"
    pickle.loads(pickle.dumps(Payload(marker))).close()
    alive = marker.is_file()
    marker.unlink(missing_ok=True)
    return alive


def write_bad(kind: str, good: Path, out: Path, marker: Path) -> Path:
    """Write a bad variant of the good checkpoint ``good`` at ``out``; the payload variant
    is a real torch zip file whose object is ``{"model": Payload(marker)}``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    if kind == "truncated":
        out.write_bytes(data[: len(data) // 2])
    elif kind == "zero_bytes":
        out.write_bytes(b"")
    elif kind == "random_bytes":
        out.write_bytes(os.urandom(4096))
    elif kind == "payload":
        torch.save({"format": "anything", "model": Payload(marker)}, out)
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return out


def write_bad_pkl(out: Path, marker: Path) -> Path:
    """A detectron2-style ``.pkl`` whose plain unpickling creates ``marker``."""
    with open(out, "wb") as f:
        pickle.dump({"model": {"stem.conv1.weight": Payload(marker)}}, f)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: compare before and after a failed run."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


class _Getattr:
    """Pickles to ``getattr(obj, name)``: the reduce a weights-only allow-list holding
    ``builtins.getattr`` lets through."""

    def __init__(self, obj, name: str):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


class _Rebuilt:
    """Pickles to ``cls()`` then its state (``__setstate__`` or ``__dict__.update``)."""

    def __init__(self, cls, state: dict):
        self.cls, self.state = cls, state

    def __reduce__(self):
        return self.cls, (), self.state


def getattr_gadget(marker: Path, carrier):
    """An object whose unpickling fetches ``eval`` through getattr alone (``getattr.__self__``
    is the builtins module) and plants it in a ``carrier()`` (an allow-listed class, here
    mmengine's HistoryBuffer) as its ``__reduce_ex__``: ``{4: (eval, (CODE,))}.get``. Whoever
    then copies the object (``copy.deepcopy``, as mmengine's MessageHub.load_state_dict does
    with the resumed runtime info) runs CODE, which creates ``marker``."""
    evaluate = _Getattr(_Getattr(getattr, "__self__"), "eval")
    code = f"open({str(marker)!r}, 'w').close()"
    return _Rebuilt(carrier, {"__reduce_ex__": _Getattr({4: (evaluate, (code,))}, "get")})
