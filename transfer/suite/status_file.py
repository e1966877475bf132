"""``suite_status.json``: the record of a step's last attempt, beside its output.

The launchers write it (``launch_local.py``, ``launch_slurm.py``): the attempt's state
(running, submitted, finished, failed, interrupted), return code, log, wall time, pid and host,
SLURM job id, the backbone file's fingerprint and the step's command. ``state.py`` reads it,
with the step's output, to decide the step's state; nothing else interprets it. Standard
library only.
"""
import json
import os
from datetime import datetime, timezone

from pretrain.common.files import write_json
from transfer.suite.plan import Step

STATUS_FILE = "suite_status.json"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_status(step: Step) -> dict:
    path = step.folder / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def write_status(step: Step, **fields) -> dict:
    """Update the record with ``fields`` (the others kept), atomically."""
    status = dict(read_status(step), step=step.id, updated_at=now_utc(), **fields)
    write_json(step.folder / STATUS_FILE, status)
    return status


def fingerprint(source: str) -> dict:
    """What identifies a backbone file cheaply: path, size and modification time."""
    if not source or source.startswith("random"):
        return {"source": source}
    try:
        stat = os.stat(source)
    except OSError:
        return {"source": source, "missing": True}
    return {"source": source, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
