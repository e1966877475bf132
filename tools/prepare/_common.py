"""Shared by the dataset preparation tools: repository on sys.path, the data root, and the
dataset converters the mmsegmentation wheel ships (``mmseg/.mim/tools/dataset_converters``)."""
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA_ROOT_ENV = "VICREGL_DATA_ROOT"


def add_common_args(parser) -> None:
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get(DATA_ROOT_ENV, "data")),
                        help=f"the one data root (default ${DATA_ROOT_ENV} or data)")
    parser.add_argument("--nproc", type=int, default=1, help="worker processes for converting")
    parser.add_argument("--allow-partial", action="store_true",
                        help="accept split sizes other than the released dataset's (a subset, "
                             "or synthetic data)")


def mmseg_converter(name: str):
    """Import ``<name>.py`` from the converters shipped in the installed mmseg wheel."""
    spec = importlib.util.find_spec("mmseg")
    if spec is None or spec.origin is None:
        raise SystemExit("mmsegmentation is not installed: run bash tools/setup_env.sh")
    path = Path(spec.origin).parent / ".mim" / "tools" / "dataset_converters" / f"{name}.py"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: the mmsegmentation 1.2.2 wheel ships its dataset "
                         "converters there; reinstall it")
    module_spec = importlib.util.spec_from_file_location(f"mmseg_converter_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # worker processes unpickle its functions by name
    module_spec.loader.exec_module(module)
    return module


def run_parallel(function, items: list, nproc: int) -> None:
    """mmengine's progress-bar map, in this process when nproc is 1."""
    from mmengine.utils import track_parallel_progress, track_progress

    if nproc > 1:
        track_parallel_progress(function, items, nproc=nproc)
    else:
        track_progress(function, items)


def fail(title: str, problems: list[str]) -> None:
    """Exit with every problem listed (file, expected path, counts)."""
    if problems:
        raise SystemExit(title + ":\n  - " + "\n  - ".join(problems))


def missing_files(what: str, paths: list[Path], total: int) -> list[str]:
    missing = [p for p in paths if not p.is_file()]
    if not missing:
        return []
    shown = "\n      ".join(str(p) for p in missing[:5])
    more = f"\n      ... and {len(missing) - 5} more" if len(missing) > 5 else ""
    return [f"{len(missing)} of {total} {what} missing; expected:\n      {shown}{more}"]
