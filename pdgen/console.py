"""What pdgen writes to the console while it works: progress that reads well in a terminal and in a log file.

In a terminal a tqdm bar redraws itself in place. Written to a file (`pdgen fit ... > fit.log 2>&1`, a batch
job) the same bar is one long line of carriage returns that `tail` and most viewers show as nothing, or as
its last state only. So a long loop asks `counter(...)` for its counter: a tqdm bar when stderr is a terminal,
otherwise a `LineProgress` that writes a plain line now and then (what, how far, how fast, how long is left)
and one when it is done. `pdgen.lit.progress.ProgressLog` does the same for training and prediction.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Protocol

from tqdm import tqdm


class Counter(Protocol):
    """What a loop needs of its progress display: count, and finish."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


def stderr_is_terminal() -> bool:
    """Whether stderr, where progress goes, is a terminal (not a file, a pipe or a test's capture)."""
    return sys.stderr.isatty()


def write_line(line: str) -> None:
    """One progress line on stderr, flushed so that a log file shows it at once."""
    print(line, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """A duration for people: `42s`, `3m05s`, `1h02m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LineProgress:
    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A counter that writes a line to stderr when it starts, at most every `every_s` s, and at the end.

        Args:
            total: the count at which the loop is done.
            desc: what is counted, the start of every line (e.g. the data subset being built).
            unit: the name of one item, e.g. `traj` or `sample`.
            every_s: the least time between two progress lines.
            clock: the time source (tests pass a fake one).
        """
        self.total, self.desc, self.unit, self.every_s, self.clock = total, desc, unit, every_s, clock
        self.n = 0
        self.started = self.last_line = clock()
        write_line(f"{desc}: {total:,} {unit} to do")

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last_line >= self.every_s and self.n < self.total:
            self.last_line = now
            elapsed = now - self.started
            left = duration(elapsed / self.n * (self.total - self.n))
            write_line(
                f"{self.desc}: {self.n:,}/{self.total:,} {self.unit} ({self.n / self.total:.0%}), "
                f"{self.n / elapsed:.1f} {self.unit}/s, {duration(elapsed)} so far, about {left} left"
            )

    def close(self) -> None:
        write_line(f"{self.desc}: {self.n:,} {self.unit} in {duration(self.clock() - self.started)}")


def counter(total: int, desc: str, unit: str, enabled: bool = True) -> Counter:
    """The progress display of a loop of `total` items: a tqdm bar in a terminal, lines in a log file.

    Args:
        total: the number of items.
        desc: what is counted, shown first (e.g. `multiturn`, the subset being built).
        unit: the name of one item.
        enabled: False shows nothing (the counter still counts).
    """
    if enabled and not stderr_is_terminal():
        return LineProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
