"""One process per output folder: a tool that writes a run (tools/pretrain.py) or a suite
(tools/run_suite.py) holds an exclusive lock on ``<folder>/.lock`` while it works, so a second
one started on the same folder stops at once, naming the holder, instead of training or running
rows twice over the same files. Standard library only (no torch import).

The lock is ``fcntl.flock`` on the lock file, which holds the holder's pid, host and tool. The
kernel releases it when the holder exits or is killed; a clean exit also removes the file, so a
finished run's folder holds no trace of it. Forked children (DataLoader workers) close their
copy, so a holder killed with SIGKILL frees the folder even while they linger.
"""
import errno
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from pretrain.common.preflight import check_output_dir

LOCK_NAME = ".lock"
# file systems without flock support (some NFS mounts without a lock daemon): warn, go on
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

_held: set[int] = set()  # lock file descriptors of this process (closed in forked children)


def _close_in_child() -> None:
    for fd in list(_held):
        try:  # closing a copy does not unlock (the parent's descriptor still holds it)
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock; the message names its pid and the lock file."""

    def __init__(self, message: str, pid: int | None):
        super().__init__(message)
        self.pid = pid


def launcher_rank() -> int:
    """This process's rank as ``pretrain.distributed.init_distributed`` will read it from the
    launcher's variables (torchrun, submitit, srun); 0 outside a launcher."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"])
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"])
    return 0


def read_holder(lock: Path, wait_s: float = 1.0) -> tuple[int | None, str]:
    """(pid, description) of the lock file's holder; it writes them just after locking, so an
    empty file is read again for up to ``wait_s``."""
    end = time.time() + wait_s
    while True:
        try:
            fields = lock.read_text().split(maxsplit=2)
        except OSError:
            fields = []
        if fields and fields[0].isdigit():
            pid = int(fields[0])
            host = fields[1] if len(fields) > 1 else ""
            where = f" on {host}" if host and host != socket.gethostname() else ""
            tool = f" ({fields[2].strip()})" if len(fields) > 2 else ""
            return pid, f"pid {pid}{where}{tool}"
        if time.time() >= end:
            return None, "another process (its pid is not recorded yet)"
        time.sleep(0.05)


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str, hint: str = "") -> Iterator[Path]:
    """Hold ``<folder>/.lock`` (creating ``folder``) for the block, else raise
    ``FolderInUseError`` naming ``what``, the folder, the holder's pid and the lock file, with
    ``hint`` appended. The folder is checked first (``check_output_dir``: a regular file in the
    way or a read-only disk raise their named errors)."""
    folder = Path(folder)
    check_output_dir(folder, what)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = _lock(path, what, folder, hint)
    if fd is None:  # a file system without locks: warned, not held
        yield path
        return
    _held.add(fd)
    try:
        tool = Path(sys.argv[0]).name or "python"
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {tool}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked: nobody else holds this file
        _held.discard(fd)
        os.close(fd)


def _lock(path: Path, what: str, folder: Path, hint: str) -> int | None:
    """The descriptor of ``path``, locked; None where the file system has no locks."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid, holder = read_holder(path)
            raise FolderInUseError(f"{what} {folder} is in use by {holder} (lock file {path})"
                                   + (f"; {hint}" if hint else ""), pid) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in UNSUPPORTED:
                raise
            print(f"warning: {what} {folder}: the file system cannot lock {path} "
                  f"({exc.strerror}); a second process in this folder would not be stopped",
                  file=sys.stderr)
            return None
        # its last holder may have removed the file between our open and our lock: then we
        # locked an orphan, and a third process could lock the new file; start again
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev,
                                                                        mine.st_ino):
            return fd
        os.close(fd)


def rank_zero_lock(folder: str | os.PathLike, what: str, hint: str = ""):
    """``folder_lock`` on rank 0 of a launcher; a no-op on the other ranks, which share rank
    0's folder and its lock."""
    return folder_lock(folder, what, hint) if launcher_rank() == 0 else nullcontext()


class LockedCall:
    """``fn(*args)`` under ``rank_zero_lock(folder, what, hint)``. Picklable, for submitit
    jobs."""

    def __init__(self, fn, folder: str | os.PathLike, what: str, hint: str = ""):
        self.fn, self.folder, self.what, self.hint = fn, str(folder), what, hint

    def __call__(self, *args, **kwargs):
        with rank_zero_lock(self.folder, self.what, self.hint):
            return self.fn(*args, **kwargs)
