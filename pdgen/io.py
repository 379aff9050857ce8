"""Writing a file so that a reader, or a run killed halfway, never sees half of it.

``atomic_write(path)`` hands out a temporary file *in the destination's own directory* and renames it onto
``path`` when the block ends without an error (``os.replace``: atomic on one filesystem). The directory
matters: a temporary file elsewhere (``$TMPDIR``) is on another filesystem as often as not, and then the
"rename" is a copy that a kill can cut short, leaving the destination truncated. The data is flushed to disk
(``fsync``) before the rename, so after a crash the name points at the old file or at the whole new one.

A process killed before the rename leaves its temporary file behind: ``.NAME.<random>.tmp`` beside
``NAME``. ``remove_stale_temporaries(directory, pattern)`` deletes those of earlier runs; writers call it
when they start.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file that becomes ``path`` when the block ends, or vanishes if it raises.

        with atomic_write(root / "manifest.json") as file:
            file.write(data)
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


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
