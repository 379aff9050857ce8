"""Mistakes a user can put right, and how the command line shows them.

A `UserError` is an error in what the user gave: a file that is not there, an option that does not fit the
others, a prompt file that does not read. Its message names the value and where it came from and says what to
do. The command line (`pdgen.cli.main` and the command groups, `pdgen.commands.run`) prints that message and
exits with status 1, without a traceback. Every other exception, a `ValueError` from torch or numpy included,
is a bug or a failure to look into and keeps its traceback. `pdgen --debug ...` (or `PDGEN_DEBUG=1`) shows the
traceback of a user error too.

Raise `UserError` where the input is checked, or turn a library's error about the user's input into one
where the command calls it (`raise UserError(str(error)) from error`), never around code that may fail for
other reasons. This module imports nothing of pdgen, so any module can raise it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEBUG_VARIABLE = "PDGEN_DEBUG"
"""Set (to anything but empty or 0) to see the traceback of a user error, as `pdgen --debug` does."""


class UserError(ValueError):
    """A mistake the user can put right; the message names the file or value and says what to do.

    A `ValueError`, so that code which checks a value and callers that catch `ValueError` need not change.
    """


def debugging() -> bool:
    """Whether user errors show their traceback: `PDGEN_DEBUG` is set (`pdgen --debug` sets it)."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def missing_file(what: str, path: str | os.PathLike[str], pattern: str, otherwise: str) -> UserError:
    """The error for a file that is not there, with what its folder holds instead.

    Args:
        what: what the file is, e.g. `config file`.
        path: the path as the user gave it.
        pattern: the names worth listing from its folder, e.g. `*.yaml`.
        otherwise: what to do when its folder holds no such file, or is not there either.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        return UserError(f"{what} {path} not found, and there is no folder {folder}/ here.\n{otherwise}")
    found = sorted(file.name for file in folder.glob(pattern))
    hint = f"In {folder}/: {', '.join(found)}." if found else otherwise
    return UserError(f"{what} {path} not found.\n{hint}")


NO_CONFIG = (
    "The configs that ship are in the repository's configs/ folder: run pdgen from the repository root, or "
    "give the file's full path."
)
NO_CHECKPOINT = (
    "`pdgen fit` writes checkpoints under its logger's folder, runs/NAME/version_N/checkpoints/ "
    "(`ls runs/*/*/checkpoints/` lists them)."
)


def checkpoint_exists(path: str | os.PathLike[str]) -> bool:
    """Whether `--ckpt_path` names a file that is there, or something Lightning resolves (`last`, a URL)."""
    return str(path) in ("best", "last", "hpc", "registry") or "://" in str(path) or Path(path).exists()


@contextmanager
def exit_on_user_error(command: str, debug: bool = False) -> Iterator[None]:
    """Within the block, a `UserError` ends the program with `{command}: {message}` and exit status 1.

    Every other exception passes untouched, with its traceback. With `debug` (`pdgen --debug`) or
    `PDGEN_DEBUG` set, a user error does too.
    """
    try:
        yield
    except UserError as error:
        if debug or debugging():
            raise
        raise SystemExit(f"{command}: {error}") from None
