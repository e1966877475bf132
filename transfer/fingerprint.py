"""Protocol fingerprints: what a transfer run actually did, and how it differs from the protocol.

Every metrics.json carries ``settings`` (the values that move a number: total batch, processes,
GPUs, norm layer, crop, test mode, iterations, precision, seed, learning rate, the config's
hash, the framework versions) and ``reference_settings`` (the same keys as the protocol config
declares them). ``deviations(settings, reference)`` lists every difference in words ("total
batch 8, protocol 16"); the tables print them beside the row, so no deviating number passes
as the protocol's. No framework is imported here: versions come from importlib.metadata.
"""
import ast
import hashlib
import importlib.metadata
import json
import re
from pathlib import Path

from transfer import extras
from transfer.detectron2_pin import DETECTRON2_COMMIT

# settings name -> distribution name (what pip installed)
FRAMEWORKS = {"torch": "torch", "torchvision": "torchvision", "mmcv": "mmcv",
              "mmengine": "mmengine", "mmseg": "mmsegmentation", "detectron2": "detectron2"}


def _detectron2_commit() -> str:
    """The commit detectron2 was built from: pip's record of a VCS install when there is one,
    else the commit tools/install_detectron2.sh pins (transfer/detectron2_pin.py)."""
    try:
        direct = importlib.metadata.distribution("detectron2").read_text("direct_url.json")
        commit = (json.loads(direct or "{}").get("vcs_info") or {}).get("commit_id")
    except (importlib.metadata.PackageNotFoundError, json.JSONDecodeError):
        commit = None
    return commit or DETECTRON2_COMMIT


def framework_versions(names: tuple[str, ...] = tuple(FRAMEWORKS)) -> dict[str, str]:
    """Installed versions of the frameworks among ``names`` (absent or hidden ones left out);
    detectron2 as ``<version>+<commit>``."""
    versions = {}
    for name in names:
        if name in extras.hidden():
            continue
        try:
            version = importlib.metadata.version(FRAMEWORKS[name])
        except importlib.metadata.PackageNotFoundError:
            continue
        versions[name] = f"{version}+{_detectron2_commit()}" if name == "detectron2" else version
    return versions


_PY_BASE = re.compile(r"^_base_\s*=", re.M)
_YAML_BASE = re.compile(r"^_BASE_:\s*[\"']?([^\"'\s#]+)", re.M)


def _local_bases(path: Path) -> list[Path]:
    """The config's ``_base_`` (mmengine) or ``_BASE_`` (detectron2) files in this repository;
    package bases (``mmseg::...``) belong to the framework version, recorded apart."""
    text = path.read_text()
    names: list[str] = []
    if path.suffix == ".py" and _PY_BASE.search(text):
        for node in ast.parse(text).body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
                value = ast.literal_eval(node.value)
                names = [value] if isinstance(value, str) else list(value)
    elif path.suffix in (".yaml", ".yml"):
        names = _YAML_BASE.findall(text)
    return [(path.parent / n).resolve() for n in names if "::" not in n]


def config_sha256(path: str | Path) -> str:
    """sha256 over the config file and, depth first, the local base files it builds on: a
    change anywhere in the protocol's own files changes it."""
    digest, seen = hashlib.sha256(), set()

    def add(file: Path) -> None:
        if file in seen:
            return
        seen.add(file)
        if not file.is_file():
            raise FileNotFoundError(f"config {file} (a base of the protocol) does not exist")
        digest.update(file.read_bytes())
        for base in _local_bases(file):
            add(base)

    add(Path(path).resolve())
    return digest.hexdigest()


def _same(actual, declared) -> bool:
    if isinstance(actual, (list, tuple)) and isinstance(declared, (list, tuple)):
        return len(actual) == len(declared) and all(map(_same, actual, declared))
    if isinstance(actual, (int, float)) and isinstance(declared, (int, float)) \
            and not isinstance(actual, bool) and not isinstance(declared, bool):
        return abs(actual - declared) <= 1e-9 * max(1.0, abs(declared))
    return actual == declared


def _words(value) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_words(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "not recorded" if value is None else str(value)


def deviations(settings: dict | None, reference: dict | None) -> list[str]:
    """Every key the protocol declares whose actual value differs, in the reference's order,
    e.g. ``["total batch 8, protocol 16", "norm BN, protocol SyncBN"]``. Nested entries
    (``frameworks``) compare key by key ("frameworks.mmseg 1.2.2, protocol 1.2.0")."""
    settings, found = settings or {}, []
    for key, declared in (reference or {}).items():
        actual = settings.get(key)
        if isinstance(declared, dict):
            inner = deviations(actual if isinstance(actual, dict) else {}, declared)
            found += [f"{key}.{text}" for text in inner]
        elif not _same(actual, declared):
            found.append(f"{key.replace('_', ' ')} {_words(actual)}, protocol {_words(declared)}")
    return found
