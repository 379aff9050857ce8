"""Writing a file so that a reader, or a run killed halfway, never sees half of it.

``atomic_write(path)`` hands out a temporary file *in the destination's own directory* (``atomic_path(path)``
its name, for writers that open the file themselves) and renames it onto ``path`` when the block ends
without an error (``os.replace``: atomic on one filesystem). The directory
matters: a temporary file elsewhere (``$TMPDIR``) is on another filesystem as often as not, and then the
"rename" is a copy that a kill can cut short, leaving the destination truncated. The data is flushed to disk
(``fsync``) before the rename, so after a crash the name points at the old file or at the whole new one.

Every file is left readable like any file its user makes (mode ``MODE``, 0644). The trap: ``mkstemp`` makes
the temporary file private (0600) and the rename keeps that mode, so without the ``fchmod`` every shard,
trajectory and page pdgen writes would be unreadable to anyone but its writer (a page served by a web
server, a data set shared on a cluster).

A process killed before the rename leaves its temporary file behind: ``.NAME.<random>.tmp`` beside
``NAME``. ``remove_stale_temporaries(directory, pattern)`` deletes those of earlier runs; writers call it
when they start.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

log = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"
MODE = 0o644
"""The mode of every file pdgen writes: the writer reads and writes it, everyone else reads it."""


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file's path that becomes ``path`` (mode ``MODE``) when the block ends, or vanishes if it
    raises; the folder is made if needed. The one place pdgen renames a file into place: ``atomic_write``
    and ``write_atomic`` are built on it, and a writer that wants a file name rather than an open file
    (safetensors' ``save_file``) uses it directly.

        with atomic_path(directory / "ema.safetensors") as temporary:
            save_file(tensors, temporary)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX
    )
    try:
        os.fchmod(descriptor, MODE)
        os.close(descriptor)
        yield Path(temporary)
        # Whatever wrote the file, its data reaches the disk before the rename.
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file that becomes ``path`` (mode ``MODE``) when the block ends, or vanishes if it raises;
    the folder is made if needed.

        with atomic_write(root / "manifest.json") as file:
            file.write(data)
    """
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        yield file


def write_atomic(path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], object]) -> None:
    """``atomic_write`` of ``data``: bytes, or a function that writes into the open file."""
    with atomic_write(path) as file:
        if callable(data):
            data(file)
        else:
            file.write(data)


def remove_stale_temporaries(directory: str | os.PathLike[str], name_pattern: str = "*") -> list[Path]:
    """Delete the temporary files that killed ``atomic_write`` calls left in ``directory``.

    Only names ``atomic_write`` makes (``.NAME.<random>.tmp``, ``NAME`` matching the glob ``name_pattern``)
    are touched. Call it when a writer starts, before its own writes.

    Returns:
        the files removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = sorted(directory.glob(f".{name_pattern}.*{TEMPORARY_SUFFIX}"))
    for file in stale:
        file.unlink(missing_ok=True)
    if stale:
        log.warning(
            "removed %d temporary file(s) an interrupted write left in %s: %s",
            len(stale),
            directory,
            ", ".join(file.name for file in stale),
        )
    return stale
