"""Put the repository root on sys.path so `python tools/x.py` works from any folder, and hide
the optional extras named in VICREGL_HIDE_EXTRAS (transfer/extras.py) from this process."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from transfer.extras import install_import_blocker  # noqa: E402

install_import_blocker()
