"""How a DataModule reads: shards of trajectories in, one ``PackedBatch`` per training step out, resumable.

What is in this file, top to bottom:
- ``PackedTrajectoryDataset``: an ``IterableDataset`` that reads ``(where, trajectory)`` pairs from a
  ``TrajectoryStream`` (``pdgen.data.shards.ShardSource``), lays each out with ``TrajectoryPacker.sample``,
  fills packs to a token budget with ``TokenBudgetPacker`` and collates each pack into a ``PackedBatch``;
- ``ReaderConfig``: the reading options every DataModule takes as one nested argument (``reader:`` in a
  config): the packing preset, the token budget, workers, shuffle buffer, layout and condition dropout;
- ``PackedDataModule``: what every DataModule shares — the reader, the tokenizer, the data loaders, the
  count of skipped samples (``pdgen.data.skips``, reported in TensorBoard and at the end of the run) and
  the data position (``state_dict``); a subclass says where its trajectories come from (``stream``);
- ``ShardDataModule``: a shard set under ``root`` — the build spec (``build:`` in a config), the manifest, the
  build's tokenizer; a subset says only how to build its shards (``build``).

The subsets' DataModules and the mixture are in ``pdgen.data.datamodules`` (and ``base``, ``edit``).

Batches. ``batch_size=None``: the loader yields packs, one per step. ``packed_timesteps`` is NaN on noised
latents: the training module draws t (``pdgen.models.bagel.flow.sample_timesteps``).

The training stream is endless: each reader (a DataLoader worker of a rank) goes through its share of the
shards epoch after epoch (a new shard order and shuffle each epoch, seeded by ``(seed, epoch)``), and one
token-budget packer runs across epoch boundaries, so no pack is left half full. Train with
``Trainer(max_steps=...)`` and validate every ``val_check_interval`` steps (an int, with
``check_val_every_n_epoch=None``): Lightning's epoch never ends on an endless loader.

Resuming at the exact data position. Every reader's stream is a function of ``(seed, rank, worker)``
alone, and PyTorch's DataLoader hands out batches round-robin over its workers, so pack ``i`` of a rank
comes from worker ``i % num_workers``. The module counts the packs that reached a training step
(``on_before_batch_transfer`` while the trainer is training; Lightning calls the DataModule's hook even
when the LightningModule has one too) and saves that count in the checkpoint (``state_dict``). On resume
after ``count`` packs, the loader's worker ``k`` plays reader ``(k + count) % num_workers`` (the DataLoader
asks worker 0 first, and it is that reader's turn), rebuilds that reader's stream and skips the packs it
had made before ``count`` without collating them (reading and laying out is cheap; no pixels are
resized), so the next pack is the one an uninterrupted run would have seen. Resuming needs the same
number of readers (``num_workers``, where 0 and 1 both mean one), world size and seed; a different one is a
ValueError. Random choices inside the stream (prompt dropout) come from the reader's own seeded generator
and are replayed by the skip.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pdgen.data.packing import PackedBatch, TrajectoryPacker
from pdgen.data.packing_config import PackingConfig, PackingGeometry
from pdgen.data.sample_layout import Layout, LayoutName, ProcessLayout, make_layout
from pdgen.data.shards import (
    ReaderPart,
    ShardSource,
    TrajectoryStream,
    read_manifest,
    split_sample_counts,
    split_shards,
)
from pdgen.data.skips import SkipCounter
from pdgen.data.token_budget import TokenBudget, TokenBudgetPacker

log = logging.getLogger(__name__)

NOTHING_FITS_AFTER = 1000
"""A reader whose first this many samples are all longer than a pack stops with an error: an endless
stream (the mixture's) has no epoch end at which to notice that no pack can ever be filled."""


class PackedTrajectoryDataset(IterableDataset):
    """Packs of trajectories, collated: one ``PackedBatch`` per item.

    Args:
        stream: ``(epoch, part) -> (where, trajectory)`` pairs; ``ShardSource.trajectories``.
        packer: lays trajectories out and collates packs.
        budget: how full a pack must be and may be.
        seed: seeds each reader's layout coins (with its reader index): condition dropout, caption pairs.
        epochs: epochs to read; None reads forever (training).
        layout: how a trajectory is laid out as a sample (``pdgen.data.sample_layout``); default the process
            with no condition dropout.
        rank: this process's rank.
        world_size: the number of ranks.
        skip: packs of this rank already consumed (round-robin over workers); each worker skips its share.
        skipped: counts the samples longer than a pack (``too_long``); the stream counts what it skips.
    """

    def __init__(
        self,
        stream: TrajectoryStream,
        packer: TrajectoryPacker,
        budget: TokenBudget,
        seed: int = 0,
        epochs: int | None = None,
        layout: Layout | None = None,
        rank: int = 0,
        world_size: int = 1,
        skip: int = 0,
        skipped: SkipCounter | None = None,
    ) -> None:
        self.stream = stream
        self.packer = packer
        self.budget = budget
        self.seed = seed
        self.epochs = epochs
        self.layout = layout or ProcessLayout()
        self.rank = rank
        self.world_size = world_size
        self.skip = skip
        self.skipped = SkipCounter() if skipped is None else skipped

    def __iter__(self) -> Iterator[PackedBatch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader asks worker 0 first, so after `skip` packs worker 0 plays the reader whose turn it
        # is: reader (id + skip) % W. Reader r made packs i = r, r + W, ...; it skips those below `skip`.
        part = ReaderPart(self.rank, self.world_size, (worker + self.skip) % workers, workers)
        mine = max(0, -(-(self.skip - part.worker) // workers))
        packs = TokenBudgetPacker(self._samples(part), self.budget)
        for pack in itertools.islice(packs, mine, None):
            yield self.packer.collate(pack)

    def _samples(self, part: ReaderPart) -> Iterator[Any]:
        """The reader's laid-out samples; those longer than a pack are skipped and counted (``too_long``).

        Raises:
            ValueError: no sample fits a pack (by the end of the first epoch, or of the first
                ``NOTHING_FITS_AFTER`` samples): the packer would wait forever.
        """
        coins = np.random.default_rng([self.seed, part.index])
        limit = self.budget.max_tokens_per_sample
        fitted, too_long, shortest = 0, 0, None
        for epoch in itertools.count() if self.epochs is None else range(self.epochs):
            empty = True
            for where, trajectory in self.stream(epoch, part):
                empty = False
                sample = self.layout(self.packer, trajectory, where, coins)
                if sample.num_tokens <= limit:
                    fitted += 1
                    yield sample
                    continue
                too_long += 1
                shortest = min(shortest or sample.num_tokens, sample.num_tokens)
                self.skipped.add("too_long")
                if too_long == 1:
                    log.warning(
                        "skipped too long sample %s: %d tokens, more than max_tokens=%d (reader %s; the "
                        "next ones are counted, not named)", where, sample.num_tokens, limit, part,
                    )  # fmt: skip
                if not fitted and too_long >= NOTHING_FITS_AFTER:
                    self._nothing_fits(part, too_long, shortest)
            if not fitted and too_long:
                self._nothing_fits(part, too_long, shortest)
            if empty and self.epochs is None:
                raise ValueError(
                    f"reader {part} got no readable sample in epoch {epoch}: an endless stream would hang; "
                    "the data has fewer samples than readers (workers x ranks), or all are corrupt"
                )

    def _nothing_fits(self, part: ReaderPart, too_long: int, shortest: int | None) -> None:
        raise ValueError(
            f"no pack can be filled: all {too_long} samples reader {part} has read are longer than "
            f"max_tokens={self.budget.max_tokens_per_sample} (the shortest has {shortest} tokens); "
            "raise the data module's max_tokens"
        )


@dataclass(frozen=True)
class ReaderConfig:
    """How a DataModule reads its trajectories into packs (``reader:`` in a config's data section).

    Args:
        packing: the ``PackingConfig`` preset named like the trunk (``tiny``, ``embedded``,
            ``bagel-7b-mot``); its image geometry is the trunk's (``pdgen fit`` links it from
            ``model.trunk``).
        max_tokens: capacity of a pack, in tokens (a pack is emitted once 97 % full).
        num_workers: DataLoader worker processes for training (0 reads in the main process).
        shuffle_buffer: trajectories held for shuffling within a reader.
        prompt_dropout: probability that a training sample's prompt is left out, so the model also learns the
            unconditional context of text classifier-free guidance.
        layout: how a trajectory becomes a training sample (``pdgen.data.sample_layout``): ``process`` (the
            paper's interleaved sequence), ``single_pass`` (prompt -> final image), ``caption`` (base stage).
        text_dropout: probability that a training sample loses every text, prompt, plans and inspections
            (``process`` only): the unconditional context of text CFG that guides with the images alone.
        plan_text: probability that a training trajectory without inspections is read as its text alone, its
            images left out (``process`` only): more of the planner's lessons per step for the same tokens
            (``pdgen.data.sample_layout.ProcessLayout``).
    """

    packing: str = "tiny"
    max_tokens: int = 4096
    num_workers: int = 1
    shuffle_buffer: int = 1000
    prompt_dropout: float = 0.1
    layout: LayoutName = "process"
    text_dropout: float = 0.0
    plan_text: float = 0.0

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")

    def changed(self, default: ReaderConfig) -> dict[str, Any]:
        """The fields whose value differs from ``default``'s, by name."""
        mine = dataclasses.asdict(self)
        return {k: v for k, v in mine.items() if v != getattr(default, k)}


class PackedDataModule(L.LightningDataModule):
    """Base of every DataModule here: a trajectory stream read as packs, and the exact data position.

    It holds what packing needs (the reader's packing preset and token budget, the tokenizer), the loaders,
    the count of skipped samples (``skipped``) and ``state_dict``. A subclass loads ``tokenizer`` in ``setup``
    and says where trajectories come from (``stream``); the readers and the packer count what they skip.

    The skip counts reach the logger as ``data/skipped_<cause>`` every ``log_every_n_steps`` training
    steps, and one line at the end of a fit says how many samples were skipped and why.

    Args:
        seed: seeds the stream (shard order, shuffle, mixture draws) and prompt dropout.
        reader: how trajectories are read into packs (``ReaderConfig``).
        tokenizer: a tokenizer directory (the BAGEL release's); None uses the one the data was built with.
        geometry: the trunk's image geometry (``PackingGeometry.of_trunk``), which replaces the packing
            preset's; ``pdgen fit`` links it from ``model.trunk``. None keeps the preset's.
    """

    default_reader = ReaderConfig()
    """This class's ``reader`` default: what a mixture expects of a subset that leaves reading to it."""

    def __init__(
        self,
        seed: int = 0,
        reader: ReaderConfig = default_reader,
        tokenizer: str | os.PathLike[str] | None = None,
        geometry: PackingGeometry | None = None,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.reader = reader
        self.packing_config = PackingConfig.from_name(reader.packing).with_geometry(geometry)
        self.budget = TokenBudget.around(reader.max_tokens)
        self.num_workers = reader.num_workers
        self.shuffle_buffer = reader.shuffle_buffer
        self.train_layout(), self.val_layout()  # bad names and probabilities fail here, before any work
        self.tokenizer_path = None if tokenizer is None else Path(tokenizer)
        self.tokenizer: Any = None
        self.skipped = SkipCounter(self.num_workers)
        self.packs_consumed = 0

    def stream(self, split: str) -> TrajectoryStream:
        """Where the trajectories of ``split`` (``train``: shuffled, ``val``: in order) come from."""
        raise NotImplementedError(f"{type(self).__name__} must say where its trajectories come from (stream)")

    image_to_text: float = 0.0
    """Share of image -> caption samples of the ``caption`` layout (the base stage sets it)."""

    def train_layout(self) -> Layout:
        """The training samples' layout, with condition dropout."""
        r = self.reader
        return make_layout(r.layout, r.prompt_dropout, r.text_dropout, self.image_to_text, r.plan_text)

    def val_layout(self) -> Layout:
        """The validation samples' layout: the same, every condition kept."""
        return make_layout(self.reader.layout, image_to_text=self.image_to_text)

    @property
    def packer(self) -> TrajectoryPacker:
        if self.tokenizer is None:
            raise ValueError(f"{type(self).__name__}.setup() has not run: no tokenizer yet")
        return TrajectoryPacker(self.tokenizer, self.packing_config)

    @property
    def skipped_samples(self) -> dict[str, int]:
        """Samples skipped so far by every reader of this module (workers included), by cause
        (``pdgen.data.skips.SKIP_CAUSES``). A sample read again (a later epoch, validation) counts again."""
        return self.skipped.by_cause()

    @property
    def _rank_and_world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def train_dataloader(self) -> DataLoader:
        """This rank's endless training stream, resumed at ``packs_consumed`` (see the module docstring)."""
        rank, world = self._rank_and_world
        dataset = PackedTrajectoryDataset(
            self.stream("train"),
            self.packer,
            self.budget,
            seed=self.seed,
            layout=self.train_layout(),
            rank=rank,
            world_size=world,
            skip=self.packs_consumed,
            skipped=self.skipped,
        )
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers)

    val_names: list[str] | None = None
    """Names of the validation loaders when there are several (the mixture: one per subset); None for one."""

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """One pass over the held-out shards, in order, every prompt kept, in the main process."""
        return self._val_loader(self.stream("val"))

    def _val_loader(self, stream: TrajectoryStream) -> DataLoader:
        rank, world = self._rank_and_world
        dataset = PackedTrajectoryDataset(
            stream,
            self.packer,
            self.budget,
            epochs=1,
            layout=self.val_layout(),
            rank=rank,
            world_size=world,
            skipped=self.skipped,
        )
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the packs that reach a training step (the data position ``state_dict`` saves) and log the
        skip counts every ``log_every_n_steps``."""
        trainer = self.trainer
        if trainer is not None and trainer.training:
            self.packs_consumed += 1
            if trainer.global_step % trainer.log_every_n_steps == 0:
                counts = {f"data/skipped_{cause}": n for cause, n in self.skipped_samples.items()}
                for logger in trainer.loggers:
                    logger.log_metrics(counts, step=trainer.global_step)
        return batch

    def teardown(self, stage: str) -> None:
        """The end of a run: one line with what the readers skipped."""
        if stage == "fit":
            (log.warning if self.skipped.total else log.info)("data: %s", self.skipped.summary())

    def state_dict(self) -> dict[str, Any]:
        """The data position: packs consumed by this rank, and what the stream depends on."""
        return {
            "packs_consumed": self.packs_consumed,
            "num_workers": self.num_workers,
            "world_size": self._rank_and_world[1],
            "seed": self.seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue at a saved data position; the next training loader starts at the next pack.

        Raises:
            ValueError: the checkpoint's stream was made with another ``num_workers``, world size or seed.
        """
        saved, now = _stream_identity(state_dict), _stream_identity(self.state_dict())
        different = {k: (saved[k], v) for k, v in now.items() if saved[k] != v}
        if different:
            raise ValueError(
                f"cannot resume the data stream exactly: (checkpoint, now) differ for {different}; the pack "
                "order depends on the seed, the number of readers (num_workers; 0 and 1 are both one reader) "
                "and the world size"
            )
        self.packs_consumed = state_dict["packs_consumed"]


def readers(num_workers: int) -> int:
    """The readers of a rank's stream: one per DataLoader worker, or the main process alone without any.
    0 and 1 workers read the same stream, so a run may resume under either."""
    return max(1, num_workers)


def _stream_identity(state: dict[str, Any]) -> dict[str, int]:
    """What a rank's pack order depends on, from a ``state_dict``."""
    return {
        "readers": readers(state["num_workers"]),
        "world_size": state["world_size"],
        "seed": state["seed"],
    }


class BuildSpec(Protocol):
    """A subset's build spec (``MultiTurnSpec``, ``ConflictSpec``, ...): what its shards are."""

    seed: int

    def to_dict(self) -> dict[str, Any]:
        """The spec as the manifest records it."""
        ...


class ShardDataModule(PackedDataModule):
    """Base of the shard-backed DataModules: a shard set under ``root`` read as packed trajectories.

    A subclass sets ``subset`` and ``builder`` (its build function) and takes its spec dataclass as
    ``build``, one nested argument (``build:`` in a config, as ``reader:`` is). ``spec()`` is what the shards
    must be, compared with the manifest's ``spec``; ``build()`` writes shards, tokenizer and manifest.

    Args:
        root: the shard set's directory (``manifest.json``, ``train-*.tar``, ``val-*.tar``, ``tokenizer/``).
        build: what the shards are; its ``seed`` also seeds the shard order, the shuffle buffer and prompt
            dropout.
        tokenizer: a tokenizer directory (the BAGEL release's); None uses the one the build saved.
        reader: how trajectories are read into packs (``ReaderConfig``).
        geometry: the trunk's image geometry; None keeps the packing preset's (see ``PackedDataModule``).
    """

    subset: str = ""
    builder: Callable[..., dict[str, Any]]
    """The subset's build function, ``builder(root, spec, progress=True)``: ``build_multiturn``, ..."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        build: BuildSpec,
        tokenizer: str | os.PathLike[str] | None = None,
        reader: ReaderConfig = PackedDataModule.default_reader,
        geometry: PackingGeometry | None = None,
    ) -> None:
        super().__init__(build.seed, reader, tokenizer, geometry)
        self.root = Path(root)
        self.build_spec = build
        self.manifest: dict[str, Any] | None = None

    # ---- what a subset provides ------------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """The build's parameters, as the manifest records them."""
        return self.build_spec.to_dict()

    def build(self) -> dict[str, Any]:
        """Write the shard set under ``root`` (with a progress bar); returns the manifest."""
        return self.builder(self.root, self.build_spec, progress=True)

    # ---- Lightning hooks -------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Build the shard set if ``root`` has none; check that an existing one is the one asked for."""
        manifest = read_manifest(self.root)
        if manifest is None:
            log.info("no %s shards in %s: building them", self.subset, self.root)
            self.build()
            return
        if manifest.get("subset") != self.subset or manifest.get("spec") != self.spec():
            raise ValueError(
                f"{self.root / 'manifest.json'} holds {manifest.get('subset')!r} shards built with "
                f"{manifest.get('spec')}, not the {self.subset!r} shards asked for ({self.spec()}); "
                "use another root, or delete that directory to rebuild"
            )
        log.info("using the %s shards in %s (%s)", self.subset, self.root, manifest["stats"])

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest and load the tokenizer (``self.tokenizer``)."""
        from pdgen.data.tokenizer import load_tokenizer

        manifest = read_manifest(self.root)
        if manifest is None:
            raise ValueError(f"no shard set in {self.root} (no manifest.json): run prepare_data first")
        self.manifest = manifest
        self.tokenizer = load_tokenizer(self.tokenizer_path or self.build_tokenizer)

    @property
    def build_tokenizer(self) -> Path:
        """The tokenizer directory the build saved (after ``setup``)."""
        if self.manifest is None:
            raise ValueError(f"{type(self).__name__}.setup() has not run: no manifest yet")
        return self.root / self.manifest["tokenizer"]

    def stream(self, split: str) -> TrajectoryStream:
        return self.source(split).trajectories

    def source(self, split: str, skipped: SkipCounter | None = None, seed: int | None = None) -> ShardSource:
        """The shards of ``split`` as a ``ShardSource``: shuffled for ``train``, in manifest order otherwise.

        Args:
            split: ``train`` or ``val``.
            skipped: the counter of skipped samples (a mixture passes its own); default this module's.
            seed: seeds shard order and shuffle; default this module's.
        """
        if self.manifest is None:
            raise ValueError(f"{type(self).__name__}.setup() has not run: no manifest yet")
        shuffle = split == "train"
        return ShardSource(
            split_shards(self.root, self.manifest, split),
            seed=self.seed if seed is None else seed,
            shuffle=shuffle,
            shuffle_buffer=self.shuffle_buffer if shuffle else 1,
            skipped=self.skipped if skipped is None else skipped,
            samples_per_shard=split_sample_counts(self.root, self.manifest, split),
        )
