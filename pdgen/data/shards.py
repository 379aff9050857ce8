"""Trajectories as webdataset shards: atomic writing, a manifest, and a reader that never drops silently.

A *shard* is a tar file in webdataset's layout: sample ``KEY`` is the members ``KEY.trajectory.json``,
``KEY.00.png``, ``KEY.01.png``, … — exactly ``Trajectory.to_files()`` with the key prefixed, so any
webdataset tool (and ``pdgen view html``) reads it. A *shard set* is a directory of them::

    root/
      manifest.json          written last: the build's spec, its shards per split, the statistics table
      train-000000.tar …     training shards
      val-000000.tar …       held-out shards
      tokenizer/             the tokenizer the build trained (the embedded default)

What is in this file, top to bottom:
- ``ShardSetWriter``: writes one split's samples, rolling over to a new shard every ``samples_per_shard``;
  each shard is written to a temporary file beside it and renamed into place (``pdgen.io.atomic_write``),
  so a reader never sees a partial shard, and the temporary files a killed build left are removed when the
  next one starts;
- ``SubsetStats`` and ``write_manifest`` / ``read_manifest``: the manifest with the paper's Table 1 figures
  (total samples, mean prompt length, images per sample, most images in a sample; positive and negative
  counts for the reasoning subsets, null here), also written atomically;
- ``ShardSource``: a split's trajectories for one reader (a worker of a rank): shard order shuffled per
  epoch, shards (or, with fewer shards than readers, samples) dealt out so every sample is read by exactly
  one reader, a seeded shuffle buffer, and samples that cannot be read (bad JSON, a ``TrajectoryError``, an
  unreadable PNG, a shard that ends early) skipped, counted by cause (``pdgen.data.skips.SkipCounter``)
  and warned about by shard and key.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pdgen.data.skips import SkipCounter
from pdgen.images import UnreadableImage
from pdgen.io import atomic_write, remove_stale_temporaries
from pdgen.trajectory import Refine, Sketch, Trajectory, TrajectoryError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "pdgen.shards/1"
"""The ``format`` field of every manifest."""


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


# --------------------------------------------------------------------------------------------------------
# Writing


class ShardSetWriter:
    """Writes one split of a shard set: ``{split}-000000.tar``, ``{split}-000001.tar``, …

        with ShardSetWriter(root, "train", samples_per_shard=500) as writer:
            for number, trajectory in enumerate(trajectories):
                writer.write(f"train{number:09d}", trajectory)
        writer.entry                 # {"shards": [{"name": ..., "samples": ...}, ...], "samples": n}

    A shard is renamed into place when it is full or the block ends; if the block raises, the shard being
    written is deleted (the finished ones stay). A build killed outright leaves its shard's temporary file;
    the next writer of the split removes it. Members carry no time stamps or owners, so the same samples
    give byte-identical shards.

    Args:
        root: the shard set's directory (must exist).
        split: the split's name, the shards' prefix.
        samples_per_shard: samples per shard before the next one starts.
        first_shard: the number of the first shard written (a build split across processes writes each
            shard by its number in the whole set).
    """

    def __init__(
        self, root: str | os.PathLike[str], split: str, samples_per_shard: int, first_shard: int = 0
    ) -> None:
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.root = Path(root)
        self.split = split
        self.samples_per_shard = samples_per_shard
        self.first_shard = first_shard
        self.shards: list[dict[str, Any]] = []
        self._open: ExitStack | None = None  # the shard being written: its atomic file, closed by `_finish`
        self._tar: tarfile.TarFile | None = None
        self._in_shard = 0
        remove_stale_temporaries(self.root, f"{split}-*.tar")

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if kind is None:
            if self._open is not None:
                self._finish()
        elif self._open is not None:
            assert self._tar is not None
            self._tar.close()
            self._open.__exit__(kind, error, trace)  # deletes the unfinished shard
            self._open = self._tar = None

    @property
    def entry(self) -> dict[str, Any]:
        """The split's manifest entry: the finished shards and the number of samples."""
        return {"shards": list(self.shards), "samples": sum(s["samples"] for s in self.shards)}

    def write(self, key: str, trajectory: Trajectory) -> None:
        """Append ``trajectory`` as sample ``key`` (no dots or slashes: webdataset cuts the key at a dot)."""
        if not key or "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must be non-empty without '.' or '/'")
        files = trajectory.to_files()
        if self._tar is None:
            self._open = ExitStack()
            path = self.root / shard_name(self.split, self.first_shard + len(self.shards))
            file = self._open.enter_context(atomic_write(path))
            # Open across many `write` calls, closed in `_finish` or `__exit__`.
            self._tar = tarfile.open(fileobj=file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        for name, data in files.items():
            member = tarfile.TarInfo(f"{key}.{name}")
            member.size, member.mode = len(data), 0o644
            self._tar.addfile(member, io.BytesIO(data))
        self._in_shard += 1
        if self._in_shard == self.samples_per_shard:
            self._finish()

    def _finish(self) -> None:
        assert self._open is not None and self._tar is not None
        self._tar.close()
        self._open.close()  # renames the shard into place
        name = shard_name(self.split, self.first_shard + len(self.shards))
        self.shards.append({"name": name, "samples": self._in_shard})
        self._open = self._tar = None
        self._in_shard = 0


# --------------------------------------------------------------------------------------------------------
# The manifest and its statistics


@dataclass
class SubsetStats:
    """The paper's Table 1 figures for one subset, accumulated one trajectory at a time.

    Prompt length is counted in characters and in words (the paper does not say which its 152.8 is).
    ``positives``/``negatives`` belong to the reasoning subsets (a correct vs a flawed intermediate);
    they stay None for the multi-turn subset, whose trajectories are all positive.
    """

    samples: int = 0
    prompt_chars: int = 0
    prompt_words: int = 0
    images: int = 0
    max_images: int = 0
    positives: int | None = None
    negatives: int | None = None

    def add(self, trajectory: Trajectory) -> None:
        generated = sum(isinstance(step, Sketch | Refine) for step in trajectory.steps)
        self.samples += 1
        self.prompt_chars += len(trajectory.prompt)
        self.prompt_words += len(trajectory.prompt.split())
        self.images += generated
        self.max_images = max(self.max_images, generated)

    def table(self) -> dict[str, Any]:
        """The manifest's ``stats``: totals and means (rounded to 0.01)."""
        n = max(self.samples, 1)
        return {
            "total_samples": self.samples,
            "mean_prompt_chars": round(self.prompt_chars / n, 2),
            "mean_prompt_words": round(self.prompt_words / n, 2),
            "mean_images_per_sample": round(self.images / n, 2),
            "max_images_per_sample": self.max_images,
            "positive_samples": self.positives,
            "negative_samples": self.negatives,
        }


STAT_LABELS = {
    "total_samples": "Total samples",
    "mean_prompt_chars": "Average prompt length (characters)",
    "mean_prompt_words": "Average prompt length (words)",
    "mean_images_per_sample": "Average images per sample",
    "max_images_per_sample": "Maximum images per sample",
    "positive_samples": "Positive samples",
    "negative_samples": "Negative samples",
}
"""Row labels of the statistics table, as the paper's Table 1 words them."""


def stats_table(stats: dict[str, Any]) -> str:
    """The statistics as a two-column Markdown table (rows that do not apply, null, are left out)."""
    rows = [(STAT_LABELS.get(key, key), f"{value:,}") for key, value in stats.items() if value is not None]
    left = max(len(label) for label, _ in rows)
    right = max(len("Number"), *(len(value) for _, value in rows))
    lines = [f"| {'Statistic':<{left}} | {'Number':>{right}} |", f"|{'-' * (left + 2)}|{'-' * (right + 1)}:|"]
    lines += [f"| {label:<{left}} | {value:>{right}} |" for label, value in rows]
    return "\n".join(lines)


def write_manifest(root: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``root/manifest.json`` atomically, with the ``format`` field first."""
    path = Path(root) / MANIFEST
    with atomic_write(path) as file:
        file.write((json.dumps({"format": FORMAT, **manifest}, indent=1) + "\n").encode("utf-8"))
    return path


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of the shard set at ``root``, or None if there is none (not built, or interrupted).

    Raises:
        ValueError: the file is not a pdgen manifest, or names a shard that is missing.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path}: format is {found!r}, expected {FORMAT!r}")
    for split, entry in manifest.get("splits", {}).items():
        for shard in entry["shards"]:
            if not (Path(root) / shard["name"]).is_file():
                raise ValueError(f"{path}: shard {shard['name']!r} of split {split!r} is missing")
    return manifest


def split_shards(root: str | os.PathLike[str], manifest: dict[str, Any], split: str) -> list[Path]:
    """The shard paths of one split, in manifest order."""
    return [Path(root) / shard["name"] for shard in _split_entry(root, manifest, split)["shards"]]


def split_sample_counts(root: str | os.PathLike[str], manifest: dict[str, Any], split: str) -> list[int]:
    """How many samples the manifest lists in each shard of one split (``split_shards``' order)."""
    return [shard["samples"] for shard in _split_entry(root, manifest, split)["shards"]]


def _split_entry(root: str | os.PathLike[str], manifest: dict[str, Any], split: str) -> dict[str, Any]:
    if split not in manifest["splits"]:
        have = sorted(manifest["splits"])
        raise ValueError(f"{Path(root) / MANIFEST} has no split {split!r}; it has {have}")
    return manifest["splits"][split]


# --------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class ReaderPart:
    """Which reader this is: worker ``worker`` of ``num_workers`` on rank ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def index(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


@dataclass
class ShardSource:
    """The trajectories of a set of shards, as one reader sees them in one epoch.

    Every epoch the shard order is permuted with ``(seed, epoch)``; reader ``i`` of ``n`` takes shards
    ``i, i + n, …`` of that order when there are at least ``n`` shards, and otherwise reads every shard
    and keeps samples ``i, i + n, …``: either way each sample goes to exactly one reader. With
    ``shuffle_buffer`` > 1 samples pass through a buffer of that size, seeded by ``(seed, epoch, i)``.

    A sample that cannot be read is skipped, counted in ``skipped`` by cause and named in a warning (shard
    and key); iteration goes on with the next sample, or the next shard:

    - JSON that does not parse, or a document that breaks the trajectory format: ``corrupt``;
    - a PNG that does not decode or claims too many pixels: ``unreadable_image``;
    - a shard that ends early: ``truncated``, one per sample missing against ``samples_per_shard`` (the
      manifest's counts; a shard cut exactly between two samples is a valid tar, and only the count tells).
      Without counts, a tar that breaks off counts one. A tar stream cannot be resynchronised, so a break
      ends the shard.

    Each reader logs a line at the end of every epoch in which it skipped something.

    Args:
        shards: the tar files.
        seed: seeds the shard order and the shuffle buffer.
        shuffle: permute the shards each epoch (False keeps manifest order, for validation).
        shuffle_buffer: samples held for shuffling (1 = no sample shuffle).
        skipped: the shared counter of skipped samples.
        samples_per_shard: how many samples each shard should hold (``split_sample_counts``); None when
            unknown (shards without a manifest).
    """

    shards: Sequence[Path]
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 1
    skipped: SkipCounter = field(default_factory=SkipCounter)
    samples_per_shard: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.samples_per_shard is not None and len(self.samples_per_shard) != len(self.shards):
            raise ValueError(
                f"ShardSource: {len(self.samples_per_shard)} sample counts for {len(self.shards)} shards"
            )

    def trajectories(self, epoch: int, part: ReaderPart = ReaderPart()) -> Iterator[tuple[str, Trajectory]]:
        """``(where, trajectory)`` pairs for reader ``part`` in ``epoch``; ``where`` is ``shard/key``."""
        samples = self._decoded(self._raw_samples(epoch, part), epoch, part)
        if self.shuffle_buffer <= 1:
            return samples
        rng = np.random.default_rng([self.seed, epoch, part.index])
        return _shuffled(samples, self.shuffle_buffer, rng)

    def _raw_samples(self, epoch: int, part: ReaderPart) -> Iterator[tuple[str, dict[str, Any]]]:
        counts = self.samples_per_shard or [None] * len(self.shards)
        order = list(zip(self.shards, counts, strict=True))
        if self.shuffle:
            order = [order[i] for i in np.random.default_rng([self.seed, epoch]).permutation(len(order))]
        by_shard = len(order) >= part.count
        mine = order[part.index :: part.count] if by_shard else order
        number = 0
        for shard, expected in mine:
            found = 0
            for key, files in self._tar_samples(shard, count_break=expected is None):
                if by_shard or number % part.count == part.index:
                    yield f"{shard.name}/{key}", files
                number += 1
                found += 1
            missing = max(0, (expected or 0) - found)
            # With samples dealt out, the missing ones were this reader's by their number in the order.
            numbers = range(number, number + missing)
            lost = missing if by_shard else sum(n % part.count == part.index for n in numbers)
            number += missing
            if lost:
                why = f"the shard ends after {found} of its {expected} samples"
                self._skip(shard.name, "truncated", why, lost)

    def _tar_samples(self, shard: Path, count_break: bool) -> Iterator[tuple[str, dict[str, Any]]]:
        """A shard's samples as ``(key, {name: bytes})``; a tar that breaks off ends the shard, with a
        warning (and a count, when ``count_break``: there is no sample count to tell how many were lost)."""
        from webdataset.tariterators import group_by_keys, tar_file_expander

        failures: list[Exception] = []

        def stop(error: Exception) -> bool:
            failures.append(error)
            return False  # a broken tar stream cannot be resynchronised: end this shard

        with open(shard, "rb") as stream:
            members = tar_file_expander([{"url": str(shard), "stream": stream}], handler=stop)
            for sample in group_by_keys(members, handler=stop):
                yield sample["__key__"], sample
        for error in failures:
            if count_break:
                self._skip(shard.name, "truncated", f"the shard breaks off ({error})")
            else:
                log.warning("shard %s breaks off (%s)", shard, error)

    def _decoded(
        self, raw: Iterator[tuple[str, dict[str, Any]]], epoch: int, part: ReaderPart
    ) -> Iterator[tuple[str, Trajectory]]:
        before = self.skipped.in_this_process
        for where, files in raw:
            try:
                yield where, Trajectory.from_files(files)
            except TrajectoryError as error:  # bad JSON, unreadable PNG, broken format: all TrajectoryError
                unreadable = isinstance(error.__cause__, UnreadableImage)
                self._skip(where, "unreadable_image" if unreadable else "corrupt", str(error))
        if self.skipped.in_this_process > before:
            where = ", ".join(sorted({str(shard.parent) for shard in self.shards}))
            log.warning(
                "end of epoch %d of %s for reader %d of %d: %s so far, all readers",
                epoch, where, part.index, part.count, self.skipped.summary(),
            )  # fmt: skip

    def _skip(self, where: str, cause: str, why: str, n: int = 1) -> None:
        self.skipped.add(cause, n)
        log.warning("skipped %d %s sample(s) at %s: %s", n, cause.replace("_", " "), where, why)


def _shuffled(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """A seeded shuffle buffer: hold ``size`` items, emit a random one as each new item arrives."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(size))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


TrajectoryStream = Callable[[int, ReaderPart], Iterator[tuple[str, Trajectory]]]
"""What a packing dataset reads: ``(epoch, part) -> (where, trajectory)`` (``ShardSource.trajectories``)."""
