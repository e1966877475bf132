"""Where datasets are: one rule for every tool, so no data path is hard-coded."""
import os
from pathlib import Path

DATA_ROOT_ENV = "VICREGL_DATA_ROOT"


def data_root(explicit: str | None = None) -> Path:
    """The data root: argument, else $VICREGL_DATA_ROOT, else ./data."""
    return Path(explicit or os.environ.get(DATA_ROOT_ENV, "data"))
