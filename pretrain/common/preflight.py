"""Output locations checked before any long work: the tools that write files call
``check_output_dir`` / ``check_output_file`` before reading their inputs, and each error names
the option (or config key) and the path. Config values are checked by
``pretrain.config.check_pretrain_config``.
"""
import errno
import os
import shutil
import uuid
from pathlib import Path

from pretrain.common.files import OutputWriteError


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the root at worst)."""
    return next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor))


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Prove that the folder ``path`` can be created and written, creating nothing: its
    nearest existing ancestor must be a folder where a probe file can be written (and is
    removed again; permission bits do not stop root, a read-only mount does).
    Raises ``NotADirectoryError`` / ``PermissionError`` naming ``what`` and the path."""
    path = Path(path)
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise NotADirectoryError(f"{what} {path}: {existing} is a regular file, not a folder; "
                                 "expected a folder path that can be created")
    probe = existing / f".write-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"{what} {path}: cannot write in {existing} "
                              f"({exc.strerror or exc}); expected a writable folder") from exc
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether the paths name one file: equal once resolved (symlinks followed, also when
    the file does not exist yet), or one inode (a hard link)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_not_an_input(path: str | os.PathLike, what: str,
                       inputs: dict[str, str | os.PathLike | None]) -> Path:
    """``path`` (an output) must not be the same file as any of ``inputs`` ({option: path}):
    writing it would replace the input the tool is reading. Raises ``ValueError`` naming
    both."""
    path = Path(path)
    for name, source in inputs.items():
        if source is not None and same_file(path, source):
            raise ValueError(f"{what} {path} is the same file as {name} {source}; expected "
                             "another path (writing it would replace the input)")
    return path


def check_output_file(path: str | os.PathLike, what: str,
                      inputs: dict[str, str | os.PathLike | None] | None = None) -> Path:
    """``check_output_dir`` on the file's folder, ``path`` must not be a folder, nor any of
    ``inputs`` (``check_not_an_input``)."""
    path = Path(path)
    check_not_an_input(path, what, inputs or {})
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; expected a file path")
    try:
        check_output_dir(path.parent, "folder")
    except OSError as exc:
        raise type(exc)(f"{what} {path}: {exc}") from None
    return path


def check_free_space(path: str | os.PathLike, need_bytes: int, what: str) -> None:
    """The folder ``path`` (or its nearest existing ancestor) must have ``need_bytes`` free:
    a run that finds the disk full at its first checkpoint has lost that work. Raises
    ``OutputWriteError`` naming ``what``, the free and the needed space."""
    path = Path(path)
    existing = nearest_existing(path)
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise OutputWriteError(errno.ENOSPC, f"{what} {path}: {free / 2**20:.1f} MiB free in "
                               f"{existing}, but this run's checkpoint needs about "
                               f"{need_bytes / 2**20:.1f} MiB; expected a folder with room for "
                               "it (each save writes the new one beside the old one)")
