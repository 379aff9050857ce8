"""Checkpoint files: written whole or not at all, read with ``weights_only``, and a damaged one named.

Lightning's own writer serialises a checkpoint into a temporary file in ``$TMPDIR`` and moves it into
place. When ``$TMPDIR`` is another filesystem (a tmpfs, a node-local disk) the move is a copy, and a run
killed during the copy leaves ``last.ckpt`` cut short: the only checkpoint of the run is gone.
``AtomicCheckpointIO`` writes the checkpoint to a temporary file beside its destination and renames it
(``pdgen.io.atomic_write``), so ``last.ckpt`` is always the previous checkpoint or the new one, and it
removes the temporary files that killed runs left in a checkpoint directory before it first writes there.
``pdgen fit`` uses it by default (``pdgen.cli``).

Reading goes through ``load_checkpoint_file``: ``torch.load`` with ``weights_only=True`` (tensors and
plain containers only: a checkpoint from elsewhere cannot run code when it is loaded), after a check that
the file is a whole torch checkpoint, so an empty, truncated or foreign file is a ``CheckpointError``
naming the file and what is wrong with it rather than an ``EOFError`` from deep inside ``torch.load``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from pdgen.io import atomic_write, remove_stale_temporaries

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format: a zip archive
_PICKLE_MAGIC = b"\x80"  # torch's legacy format starts with a pickle protocol byte


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: the message names the file and what is wrong with it."""


def check_checkpoint_file(path: str | os.PathLike[str]) -> None:
    """Raise ``CheckpointError`` unless ``path`` looks like a whole torch checkpoint (cheap: reads the
    first bytes and the zip archive's directory at the end, not the tensors).

    A missing file is left to the caller (``FileNotFoundError``).
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a save was cut short, or it is not one")
    with open(path, "rb") as file:
        head = file.read(4)
    if head == _ZIP_MAGIC:
        try:
            zipfile.ZipFile(path).close()
        except zipfile.BadZipFile as error:
            raise CheckpointError(
                f"checkpoint {path} is truncated or damaged ({size:,} bytes, {error}): a save was cut "
                "short, or the copy is incomplete"
            ) from None
    elif not head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(f"{path} is not a torch checkpoint: it starts with {head!r}")


def load_checkpoint_file(
    path: str | os.PathLike[str], map_location: Any = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded with ``weights_only=True``.

    Args:
        path: a file ``torch.save`` wrote (a Lightning checkpoint).
        map_location: where tensors go (``torch.load``'s argument).
        mmap: map the file instead of reading it (large checkpoints, a few tensors wanted).

    Raises:
        FileNotFoundError: there is no such file.
        CheckpointError: the file is empty, truncated, not a checkpoint, or holds objects other than
            tensors and plain containers.
    """
    check_checkpoint_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path} cannot be loaded with weights_only=True: {first}") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer for local files, writing atomically in the destination's
    directory and reading with ``weights_only=True`` (see the module docstring).

    ``pdgen fit`` uses it by default; elsewhere ``Trainer(plugins=[AtomicCheckpointIO()])``.
    """

    def __init__(self) -> None:
        self._started_in: set[Path] = set()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent not in self._started_in:  # the first write of this run there: clear killed runs' files
            remove_stale_temporaries(path.parent, "*.ckpt")
            self._started_in.add(path.parent)
        with atomic_write(path) as file:
            torch.save(checkpoint, file)

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Callable | Any = "cpu",
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """The checkpoint at ``path``, always with ``weights_only=True``.

        Raises:
            ValueError: ``weights_only=False`` was asked for.
        """
        if weights_only is False:
            raise ValueError(f"{type(self).__name__} loads checkpoints with weights_only=True only")
        if not Path(path).exists():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint_file(path, map_location)
