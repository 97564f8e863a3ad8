"""Files the user keeps are written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

_TMP = ".tmp"  # the suffix of the temporary files, ".<name>.<random>.tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it is synced to disk and renamed
    to `path` (then the folder is synced), on any error it is removed and `path` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TMP}")
    try:
        yield tmp
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def unfinished(folder: Path, names: str) -> list[Path]:
    """The temporary files that writes of files named like the glob `names` in `folder` left
    behind when a crash interrupted them (atomic_path removes them on any error it sees)."""
    return sorted(folder.glob(f".{names}.*{_TMP}"))


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); directories cannot be opened on some platforms."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's file-creation mask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
