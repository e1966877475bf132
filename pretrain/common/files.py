"""Atomic file writes: a reader, or a process killed mid-write, sees the old file or the new
one, never half of one. Standard library only (no torch import), so the suite runner, the
tables and the tools use it without loading torch.

Every write goes to ``.<name>.tmp-<token>-<pid>`` in the target's folder (a rename is atomic
only within one file system), is flushed to disk, then renamed over the target. The pid comes
last so ``remove_stale_temporaries`` can tell a killed writer's leftovers from a live one's.
"""
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pretrain.common.pids import pid_alive


def temporary_name(path: Path) -> Path:
    """A temporary beside ``path``, unique across threads and processes."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}-{os.getpid()}")


FULL_DISK_BYTES = 1 << 20  # less free space than this after a failed write: the disk is full


class OutputWriteError(OSError):
    """A file could not be written (full disk, read-only or vanished folder); the message
    names it, and its previous content is kept."""


def free_mib(folder: Path) -> float:
    try:
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return float("nan")


def _write_failed(path: Path, exc: Exception) -> OutputWriteError | None:
    """The clear error for a failed write, or None when the failure is not the file system's
    (a bug in the writer). torch's zip writer reports a full disk as a RuntimeError
    ('unexpected pos'), so a nearly full disk counts whatever the exception says."""
    free = free_mib(path.parent)
    no_space = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    full = no_space or free * 2**20 < FULL_DISK_BYTES
    if not full and not isinstance(exc, OSError):
        return None
    why = "the disk is full" if full else (exc.strerror or str(exc))
    kept = (f"the previous {path.name} is unchanged" if path.exists()
            else f"no {path.name} was written")
    return OutputWriteError(exc.errno if isinstance(exc, OSError) and exc.errno else errno.ENOSPC,
                            f"cannot write {path}: {why} ({free:.1f} MiB free in {path.parent}); "
                            f"{kept} and no temporary is left")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it is renamed over ``path``, on any
    error (a full disk, an interrupt) it is deleted and ``path`` keeps its old content; a
    file-system failure is raised as ``OutputWriteError`` naming ``path`` and the free space.
    For writers that want a file name (``savefig``, ``PIL``): pass them an explicit format,
    the temporary's suffix is not the target's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        clear = None if isinstance(exc, OutputWriteError) else _write_failed(path, exc)
        tmp.unlink(missing_ok=True)
        if clear is None:
            raise
        raise clear from exc
    except BaseException:  # an interrupt: no new error, only no temporary left behind
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """``open(path, mode)`` through ``atomic_path``; the data is fsynced before the rename, so
    a power loss after it cannot leave an empty file under the new name."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented JSON with a final newline (what every JSON record here looks like)."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries of ``path`` left by killed processes (a kill -9 during a
    checkpoint save leaves one as large as the checkpoint); live writers' are kept."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
