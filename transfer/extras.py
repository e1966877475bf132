"""Optional extras (detectron2): is one usable here, and hiding one on purpose.

``VICREGL_HIDE_EXTRAS=detectron2`` (a comma list of top-level package names) makes every tool
and test behave as if those packages were not installed, so the missing-extra path is tested
on a machine that has them. ``install_import_blocker()`` (called by tools/_bootstrap.py,
which every tool imports first, and by tests/conftest.py when the variable is set) puts a
finder first on ``sys.meta_path`` that refuses them with a ModuleNotFoundError naming the
variable; the variable is inherited by subprocesses, whose tools install the blocker again.

Check availability with ``available(name)``, not ``importlib.util.find_spec``: under the
blocker ``find_spec`` raises the blocker's ModuleNotFoundError instead of returning None.
No framework is imported here.
"""
import importlib.util
import os
import sys

HIDE_ENV = "VICREGL_HIDE_EXTRAS"

# The optional extras the suite knows, with how to get them (the message of a missing one).
INSTALL_HINTS = {
    "detectron2": "optional extra: bash tools/install_detectron2.sh (docs/detection.md)",
}


def hidden() -> set[str]:
    """Package names listed in ``VICREGL_HIDE_EXTRAS`` (empty when it is unset)."""
    raw = os.environ.get(HIDE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def hide_requested() -> bool:
    """Whether ``VICREGL_HIDE_EXTRAS`` names at least one package."""
    return bool(hidden())


def available(name: str) -> bool:
    """Whether the top-level package ``name`` can be imported here and is not hidden."""
    if name in hidden():
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def missing_reason(name: str) -> str:
    """Why ``name`` is not usable, with how to install it ('' when it is available)."""
    if available(name):
        return ""
    hint = INSTALL_HINTS.get(name, "not an extra the suite knows how to install")
    if name in hidden():
        return f"{name} is hidden by {HIDE_ENV}={os.environ.get(HIDE_ENV)} ({hint})"
    return f"{name} is not installed ({hint})"


class HiddenExtraFinder:
    """A ``sys.meta_path`` finder refusing the hidden packages and their submodules."""

    def __init__(self, names: set[str]):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".", 1)[0]
        if top in self.names:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: {top} is hidden by {HIDE_ENV}="
                f"{os.environ.get(HIDE_ENV, ','.join(sorted(self.names)))} (unset it to use "
                f"the installed package)", name=fullname)
        return None


def install_import_blocker() -> HiddenExtraFinder | None:
    """Install the finder for the packages of ``VICREGL_HIDE_EXTRAS`` (once); returns it, or
    None when nothing is hidden. An already imported hidden package is an error: hiding it
    then would be a lie."""
    names = hidden()
    if not names:
        return None
    for finder in sys.meta_path:
        if isinstance(finder, HiddenExtraFinder):
            finder.names |= names
            return finder
    loaded = sorted(n for n in names if n in sys.modules)
    if loaded:
        raise RuntimeError(f"{HIDE_ENV} hides {', '.join(loaded)}, which this process has "
                           "already imported; set the variable before starting Python")
    finder = HiddenExtraFinder(names)
    sys.meta_path.insert(0, finder)
    return finder
