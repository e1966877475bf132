import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


import pytest  # noqa: E402

# make test runs one pytest-xdist worker per core: each worker, and every tool its tests
# start, gets an equal share of the cores as threads (more threads than cores spin at every
# OpenMP barrier on a busy CPU). Set before torch is imported; an explicit value is kept.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, str(THREADS))


def load_tool(name: str):
    """A tools/ script as a module, to call its functions in this process. tools/ goes at the
    END of sys.path (the scripts import their _bootstrap neighbour): first, it would make
    `import pretrain` find tools/pretrain.py instead of the package."""
    import importlib.util

    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.append(tools)
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

from transfer.extras import install_import_blocker  # noqa: E402

# VICREGL_HIDE_EXTRAS=detectron2: the tests see the package as absent (importorskip skips,
# subprocess tools inherit the variable and hide it too); see transfer/extras.py.
install_import_blocker()


@pytest.fixture
def poison_loss_at_call(monkeypatch):
    """Make VICRegL.forward return a NaN loss on its n-th call (n given to the fixture)."""
    from pretrain.model import VICRegL

    def install(n: int):
        calls = {"n": 0}
        original = VICRegL.forward

        def poisoned(self, *args, **kwargs):
            loss, logs = original(self, *args, **kwargs)
            calls["n"] += 1
            return (loss * float("nan") if calls["n"] == n else loss), logs

        monkeypatch.setattr(VICRegL, "forward", poisoned)

    return install


# Framework markers by file, so `-m "not mmseg"` works in a pretraining-only environment
# (VICREGL_NO_MMCV=1) and `-m detectron2` selects the optional extra's tests.
FRAMEWORK_FILES = {"mmseg": ("test_seg_",), "detectron2": ("test_det_train", "test_det_detectron2")}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        for marker, prefixes in FRAMEWORK_FILES.items():
            if name.startswith(prefixes):
                item.add_marker(getattr(pytest.mark, marker))
