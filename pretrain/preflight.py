"""Output locations checked before any long work: the tools that write files call
``check_output_dir`` / ``check_output_file`` before reading their inputs, and each error names
the option (or config key) and the path. Config values are checked by
``pretrain.config.check_pretrain_config``.
"""
import os
import uuid
from pathlib import Path


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Prove that the folder ``path`` can be created and written, creating nothing: its
    nearest existing ancestor must be a folder where a probe file can be written (and is
    removed again; permission bits do not stop root, a read-only mount does).
    Raises ``NotADirectoryError`` / ``PermissionError`` naming ``what`` and the path."""
    path = Path(path)
    existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor))
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


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """``check_output_dir`` on the file's folder, and ``path`` must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; expected a file path")
    try:
        check_output_dir(path.parent, "folder")
    except OSError as exc:
        raise type(exc)(f"{what} {path}: {exc}") from None
    return path
