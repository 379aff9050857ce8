"""Atomic writes: a file appears whole or not at all, and readable like any file its user makes.

Every writer of pdgen's outputs (shards, trajectories, prediction folders, reports, pages) writes a
temporary file beside its target and renames it over the target (`os.replace`, atomic on one file system),
so a reader, or a run that was interrupted, never sees half a file. The trap is the mode: `tempfile.mkstemp`
creates the temporary file private (0600) and the rename keeps that mode, so without `temporary_beside`
every output would be unreadable to anyone but its writer (a page served by a web server, a data set shared
on a cluster).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

MODE = 0o644
"""The mode of every file pdgen writes: the writer reads and writes it, everyone else reads it."""


def temporary_beside(path: Path) -> tuple[int, str]:
    """`(descriptor, path)` of an open temporary file beside `path`, mode `MODE`, to rename onto `path`."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(descriptor, MODE)
    return descriptor, temporary


def write_atomic(path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write `data` (bytes, or a function that writes into the open file) to `path` atomically.

    The folder is created if needed; on any error the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = temporary_beside(path)
    try:
        with os.fdopen(descriptor, "wb") as file:
            if callable(data):
                data(file)
            else:
                file.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
