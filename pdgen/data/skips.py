"""``SkipCounter``: every sample that does not reach training, counted by why.

The readers and the packer of ``pdgen.data`` skip a sample rather than stop a long run, and each skip is
counted here under one cause:

- ``corrupt``: a member that does not parse (bad JSON, a document that breaks the trajectory format);
- ``truncated``: samples missing from a shard that ends early (fewer than the manifest lists, or a tar
  that breaks off);
- ``too_long``: a sample longer than a whole pack (``max_tokens``);
- ``unreadable_image``: a PNG that does not decode, or whose header claims more pixels than
  ``pdgen.images.MAX_IMAGE_PIXELS`` (a decompression bomb).

The counts live in shared memory, one row per DataLoader worker and one for the main process (validation
reads there while training workers run): each process adds only to its own row, so no increment is lost,
and the main process reads every worker's counts. ``PackedDataModule`` reports them (TensorBoard, a line
at the end of the run); readers warn with the shard and key of each skip.
"""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

SKIP_CAUSES = ("corrupt", "truncated", "too_long", "unreadable_image")
"""Why a sample was skipped, in the order reports list them."""


class SkipCounter:
    """Skipped samples by cause, summed over the processes that read.

        skipped = SkipCounter(workers=2)
        skipped.add("too_long")          # in a worker or in the main process
        skipped.by_cause()               # {"corrupt": 0, "truncated": 0, "too_long": 1, ...}

    Args:
        workers: the DataLoader workers that may count (``num_workers``).
    """

    def __init__(self, workers: int = 0) -> None:
        self.counts = torch.zeros(workers + 1, len(SKIP_CAUSES), dtype=torch.long).share_memory_()
        # (workers + 1, causes): the last row is the main process's

    def add(self, cause: str, n: int = 1) -> None:
        """Count ``n`` samples skipped for ``cause`` in this process's row."""
        if cause not in SKIP_CAUSES:
            raise ValueError(f"unknown skip cause {cause!r}; expected one of {', '.join(SKIP_CAUSES)}")
        self.counts[_row(), SKIP_CAUSES.index(cause)] += n

    @property
    def in_this_process(self) -> int:
        """Samples this process (a worker, or the main process) has skipped."""
        return int(self.counts[_row()].sum())

    def by_cause(self) -> dict[str, int]:
        """Every cause with its count, over all processes."""
        return dict(zip(SKIP_CAUSES, self.counts.sum(0).tolist(), strict=True))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def summary(self) -> str:
        """One line for logs: ``"3 samples skipped: 1 corrupt, 2 truncated"``, or ``"no sample skipped"``."""
        counts = {cause: n for cause, n in self.by_cause().items() if n}
        if not counts:
            return "no sample skipped"
        causes = ", ".join(f"{n} {cause.replace('_', ' ')}" for cause, n in counts.items())
        return f"{sum(counts.values())} sample(s) skipped: {causes}"


def _row() -> int:
    """This process's row: its DataLoader worker id, or the last row in the main process."""
    info = get_worker_info()
    return -1 if info is None else info.id
