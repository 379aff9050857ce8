"""The token-budget packer: a stream of samples into packs that fill a token budget.

``TokenBudgetPacker`` is BAGEL's packing loop with a best-fit overflow buffer and a knapsack when the buffer
overflows (see the class docstring); ``TokenBudget`` says how full a pack must be and may be. Samples are
anything with a ``num_tokens`` (``pdgen.data.packing.PackedSample``); the packer never touches pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class _Sized(Protocol):
    @property
    def num_tokens(self) -> int: ...


@dataclass(frozen=True)
class TokenBudget:
    """How full a pack must be, how full it may be, and what to do with the samples that do not fit.

    Args:
        max_tokens: a pack's capacity (the paper packs 33,000 tokens); the padding fraction is measured
            against it.
        expected_tokens: a pack is emitted once it holds at least this many tokens.
        max_tokens_per_sample: longer samples are skipped and counted (``PackerStats.skipped``).
        max_buffer_size: samples that do not fit the current pack wait in a buffer; when it holds more than
            this many, the current pack is emitted as it is.
    """

    max_tokens: int = 33_000
    expected_tokens: int = 32_000
    max_tokens_per_sample: int = 33_000
    max_buffer_size: int = 50

    @classmethod
    def around(cls, tokens: int, fill: float = 0.97, max_buffer_size: int = 50) -> TokenBudget:
        """Packs of ``tokens`` capacity, emitted once ``fill`` of it is used; samples up to a whole pack."""
        return cls(tokens, math.floor(tokens * fill), tokens, max_buffer_size)

    def __post_init__(self) -> None:
        if not 0 < self.expected_tokens <= self.max_tokens:
            raise ValueError(
                f"TokenBudget: need 0 < expected_tokens={self.expected_tokens} <= {self.max_tokens}"
            )
        if not 0 < self.max_tokens_per_sample <= self.max_tokens:
            raise ValueError(
                f"TokenBudget: need 0 < max_tokens_per_sample={self.max_tokens_per_sample} "
                f"<= max_tokens={self.max_tokens}"
            )
        if self.max_buffer_size < 0:
            raise ValueError(f"TokenBudget: max_buffer_size={self.max_buffer_size} must be >= 0")


@dataclass
class PackerStats:
    """What a ``TokenBudgetPacker`` has emitted and skipped so far."""

    packs: int = 0
    samples: int = 0
    tokens: int = 0
    capacity: int = 0
    skipped: int = 0

    @property
    def padding_fraction(self) -> float:
        """Share of the emitted packs' capacity that no sample filled."""
        return 1.0 - self.tokens / self.capacity if self.capacity else 0.0


class TokenBudgetPacker:
    """The packs of a stream of samples, each filling a ``TokenBudget`` (BAGEL's loop, best-fit buffer).

        packer = TokenBudgetPacker((trajectory_packer.sample(t) for t in trajectories), TokenBudget())
        for pack in packer:                      # a list of samples
            batch = trajectory_packer.collate(pack)
        print(packer.stats.padding_fraction, packer.stats.skipped)


    Samples are appended until the pack holds ``expected_tokens``. A sample that would overflow
    ``max_tokens`` waits in a buffer; after each step the pack is topped up with the *largest* buffered
    sample that still fits (BAGEL takes the oldest). When the buffer holds more than ``max_buffer_size``
    samples, none of which fits, BAGEL emits the pack as it is; here the pack is re-chosen from everything
    waiting (pack and buffer) as the fullest subset that contains the oldest buffered sample, so nothing
    waits forever. The end of the stream drains the same way. Both matter when samples are a sizeable part
    of a pack: at the paper's lengths (about 14K tokens a sample, 33K a pack) they take padding from 23 %
    (no buffer) to under 3 % (``tools/bench_packing.py``). Over-long samples are skipped and counted.
    Works on anything with a ``num_tokens`` property.

    Args:
        samples: anything with ``num_tokens`` (``PackedSample``s), read lazily.
        budget: the pack sizes.
    """

    def __init__(self, samples: Iterable[_Sized], budget: TokenBudget) -> None:
        self.samples = samples
        self.budget = budget
        self.stats = PackerStats()

    def __iter__(self) -> Iterator[list[Any]]:
        b = self.budget
        buffer: list[Any] = []
        pack: list[Any] = []
        for sample in self.samples:
            if sample.num_tokens > b.max_tokens_per_sample:
                self.stats.skipped += 1
                continue
            if _used(pack) + sample.num_tokens <= b.max_tokens:
                pack.append(sample)
            else:
                buffer.append(sample)
            self._top_up(pack, buffer)
            while _used(pack) >= b.expected_tokens or len(buffer) > b.max_buffer_size:
                if _used(pack) < b.expected_tokens:
                    pack, buffer = self._fullest(pack + buffer, oldest=len(pack))
                yield self._emit(pack)
                pack = []
                self._top_up(pack, buffer)
        waiting = pack + buffer
        while waiting:
            pack, waiting = self._fullest(waiting, oldest=0)
            yield self._emit(pack)

    def _fullest(self, pool: list[Any], oldest: int) -> tuple[list[Any], list[Any]]:
        """Split ``pool`` into the fullest pack holding ``pool[oldest]`` and the rest (both in pool order).

        A 0/1 knapsack over token counts: ``first[s]`` is the sample whose addition first made the sum ``s``
        reachable, so walking back from the largest reachable sum recovers one subset that makes it.
        """
        sizes = [s.num_tokens for s in pool]
        room = self.budget.max_tokens - sizes[oldest]
        first = np.full(room + 1, -1)
        first[0] = len(pool)  # reachable with nothing
        for i, n in enumerate(sizes):
            if i != oldest and 0 < n <= room:
                reachable = first >= 0
                newly = np.zeros_like(reachable)
                newly[n:] = reachable[:-n] & ~reachable[n:]
                first[newly] = i
        chosen, total = {oldest}, int(np.flatnonzero(first >= 0).max())
        while total:
            chosen.add(int(first[total]))
            total -= sizes[first[total]]
        return [s for i, s in enumerate(pool) if i in chosen], [
            s for i, s in enumerate(pool) if i not in chosen
        ]

    def _top_up(self, pack: list[Any], buffer: list[Any]) -> None:
        """Move the largest buffered sample that fits into ``pack``, while one does."""
        while buffer:
            room = self.budget.max_tokens - _used(pack)
            fitting = [i for i, s in enumerate(buffer) if s.num_tokens <= room]
            if not fitting:
                return
            best = max(fitting, key=lambda i: buffer[i].num_tokens)
            pack.append(buffer.pop(best))

    def _emit(self, pack: list[Any]) -> list[Any]:
        assert pack and _used(pack) <= self.budget.max_tokens
        self.stats.packs += 1
        self.stats.samples += len(pack)
        self.stats.tokens += _used(pack)
        self.stats.capacity += self.budget.max_tokens
        return pack


def _used(pack: list[Any]) -> int:
    return sum(s.num_tokens for s in pack)
