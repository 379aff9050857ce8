"""The DataModules: shards of trajectories in, one ``PackedBatch`` per training step out, resumable exactly.

What is in this file, top to bottom:
- ``PackedTrajectoryDataset``: an ``IterableDataset`` that reads ``(where, trajectory)`` pairs from a
  ``TrajectoryStream`` (``pdgen.data.shards.ShardSource``), lays each out with ``TrajectoryPacker.sample``,
  fills packs to a token budget with ``TokenBudgetPacker`` and collates each pack into a ``PackedBatch``;
- ``ShardDataModule``: everything a shard-backed subset shares — the manifest, the tokenizer, the packing
  preset, the data loaders, the corrupt-sample counter and the data position (``state_dict``); a subset
  says only how to build its shards (``build``) and what spec they must have (``spec``);
- ``MultiTurnDataModule``: the paper's multi-turn generation subset from the shapes world.
The reasoning subsets (conflict, alignment) and the mixture reuse ``ShardDataModule`` and the dataset.

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
``num_workers``, world size and seed; a different one is a ValueError. Random choices inside the
stream (prompt dropout) come from the reader's own seeded generator and are replayed by the skip.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pdgen.data.build import SUBSET, MultiTurnSpec, build_multiturn
from pdgen.data.packing import PackedBatch, PackingConfig, TokenBudget, TokenBudgetPacker, TrajectoryPacker
from pdgen.data.shards import (
    CorruptCounter,
    ReaderPart,
    ShardSource,
    TrajectoryStream,
    read_manifest,
    split_shards,
)

log = logging.getLogger(__name__)


class PackedTrajectoryDataset(IterableDataset):
    """Packs of trajectories, collated: one ``PackedBatch`` per item.

    Args:
        stream: ``(epoch, part) -> (where, trajectory)`` pairs; ``ShardSource.trajectories``.
        packer: lays trajectories out and collates packs.
        budget: how full a pack must be and may be.
        seed: seeds each reader's prompt-dropout coins (with its reader index).
        epochs: epochs to read; None reads forever (training).
        prompt_dropout: probability that a sample's prompt is left out (classifier-free guidance).
        rank: this process's rank.
        world_size: the number of ranks.
        skip: packs of this rank already consumed (round-robin over workers); each worker skips its share.
    """

    def __init__(
        self,
        stream: TrajectoryStream,
        packer: TrajectoryPacker,
        budget: TokenBudget,
        seed: int = 0,
        epochs: int | None = None,
        prompt_dropout: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
        skip: int = 0,
    ) -> None:
        if not 0.0 <= prompt_dropout <= 1.0:
            raise ValueError(f"prompt_dropout is a probability in [0, 1], got {prompt_dropout}")
        self.stream = stream
        self.packer = packer
        self.budget = budget
        self.seed = seed
        self.epochs = epochs
        self.prompt_dropout = prompt_dropout
        self.rank = rank
        self.world_size = world_size
        self.skip = skip

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
        coins = np.random.default_rng([self.seed, part.index])
        for epoch in itertools.count() if self.epochs is None else range(self.epochs):
            empty = True
            for where, trajectory in self.stream(epoch, part):
                empty = False
                drop = self.prompt_dropout > 0 and bool(coins.random() < self.prompt_dropout)
                yield self.packer.sample(trajectory, where, drop_prompt=drop)
            if empty and self.epochs is None:
                raise ValueError(
                    f"reader {part} got no readable sample in epoch {epoch}: an endless stream would hang; "
                    "the data has fewer samples than readers (workers x ranks), or all are corrupt"
                )


class ShardDataModule(L.LightningDataModule):
    """Base of the shard-backed DataModules: a shard set under ``root`` read as packed trajectories.

    A subclass sets ``subset`` and implements ``spec()`` (what the shards must be, compared with the
    manifest's ``spec``) and ``build()`` (write shards, tokenizer and manifest under ``root``).

    Args:
        root: the shard set's directory (``manifest.json``, ``train-*.tar``, ``val-*.tar``, ``tokenizer/``).
        seed: seeds the shard order, the shuffle buffer and prompt dropout.
        packing: the ``PackingConfig`` preset named like the trunk (``tiny`` or ``bagel-7b-mot``).
        max_tokens: capacity of a pack, in tokens (a pack is emitted once 97 % full).
        num_workers: DataLoader worker processes for training (0 reads in the main process).
        shuffle_buffer: trajectories held for shuffling within a reader.
        prompt_dropout: probability that a training sample's prompt is left out, so the model also learns the
            unconditional context of text classifier-free guidance.
        tokenizer: a tokenizer directory (the BAGEL release's); None uses the one the build saved.
    """

    subset: str = ""

    def __init__(
        self,
        root: str | os.PathLike[str],
        seed: int = 0,
        packing: str = "tiny",
        max_tokens: int = 4096,
        num_workers: int = 1,
        shuffle_buffer: int = 1000,
        prompt_dropout: float = 0.1,
        tokenizer: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.root = Path(root)
        self.seed = seed
        self.packing_config = PackingConfig.from_name(packing)
        self.budget = TokenBudget.around(max_tokens)
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.prompt_dropout = prompt_dropout
        self.tokenizer_path = None if tokenizer is None else Path(tokenizer)
        self.tokenizer: Any = None
        self.manifest: dict[str, Any] | None = None
        self.corrupt = CorruptCounter(num_workers)
        self.packs_consumed = 0

    # ---- what a subset provides ------------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """The build's parameters, as the manifest records them."""
        raise NotImplementedError(f"{type(self).__name__} must say what its shards are (spec)")

    def build(self) -> dict[str, Any]:
        """Write the shard set under ``root`` (with a progress bar); returns the manifest."""
        raise NotImplementedError(f"{type(self).__name__} must say how to build its shards (build)")

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
        self.tokenizer = load_tokenizer(self.tokenizer_path or self.root / manifest["tokenizer"])

    @property
    def packer(self) -> TrajectoryPacker:
        if self.tokenizer is None:
            raise ValueError(f"{type(self).__name__}.setup() has not run: no tokenizer yet")
        return TrajectoryPacker(self.tokenizer, self.packing_config)

    @property
    def corrupt_samples(self) -> int:
        """Samples skipped as unreadable so far, by every reader of this module (workers included)."""
        return self.corrupt.total

    @property
    def _rank_and_world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def train_dataloader(self) -> DataLoader:
        """This rank's endless training stream, resumed at ``packs_consumed`` (see the module docstring)."""
        rank, world = self._rank_and_world
        dataset = PackedTrajectoryDataset(
            self._source("train", shuffle=True).trajectories,
            self.packer,
            self.budget,
            seed=self.seed,
            prompt_dropout=self.prompt_dropout,
            rank=rank,
            world_size=world,
            skip=self.packs_consumed,
        )
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        """One pass over the held-out shards, in order, every prompt kept, in the main process."""
        rank, world = self._rank_and_world
        dataset = PackedTrajectoryDataset(
            self._source("val", shuffle=False).trajectories,
            self.packer,
            self.budget,
            epochs=1,
            rank=rank,
            world_size=world,
        )
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def _source(self, split: str, shuffle: bool) -> ShardSource:
        if self.manifest is None:
            raise ValueError(f"{type(self).__name__}.setup() has not run: no manifest yet")
        return ShardSource(
            split_shards(self.root, self.manifest, split),
            seed=self.seed,
            shuffle=shuffle,
            shuffle_buffer=self.shuffle_buffer if shuffle else 1,
            corrupt=self.corrupt,
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the packs that reach a training step: the data position ``state_dict`` saves."""
        if self.trainer is not None and self.trainer.training:
            self.packs_consumed += 1
        return batch

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
        mine = {"num_workers": self.num_workers, "world_size": self._rank_and_world[1], "seed": self.seed}
        different = {k: (state_dict[k], v) for k, v in mine.items() if state_dict[k] != v}
        if different:
            raise ValueError(
                f"cannot resume the data stream exactly: (checkpoint, now) differ for {different}; the pack "
                "order depends on the seed, the number of workers and the world size"
            )
        self.packs_consumed = state_dict["packs_consumed"]


class MultiTurnDataModule(ShardDataModule):
    """The multi-turn generation subset: ShapesEval train prompts built step by step in the shapes world.

    Each trajectory is Plan, Sketch, Plan, Sketch, …: the incremental instruction and scene description
    of every step, and the world's exact render of it (``pdgen.data.build``). ``prepare_data`` builds the
    shards and the tokenizer under ``root`` when they are missing (the default 10,000 trajectories take
    about a minute and a half on a 2-core CPU; docs/benchmarks.md).

    Args:
        root: the shard set's directory; built there if it holds none.
        num_trajectories: training trajectories to build.
        world: the shapes world preset (default, all, small).
        augment: probability that the planner rewrites a step into an edit (recolor, replace, remove,
            move) that a later step corrects.
        seed: seeds the build, the shard order, the shuffle and prompt dropout.
        packing: the ``PackingConfig`` preset named like the trunk (``tiny`` or ``bagel-7b-mot``).
        max_tokens: capacity of a pack, in tokens (a pack is emitted once 97 % full).
        num_workers: DataLoader worker processes for training (0 reads in the main process).
        val_size: held-out trajectories for validation (same prompts, other seeds).
        samples_per_shard: trajectories per shard. Readers (workers x ranks) split whole shards when there
            are at least as many shards as readers; otherwise each reads every shard and keeps its share.
        shuffle_buffer: trajectories held for shuffling within a reader.
        prompt_dropout: probability that a training sample's prompt is left out (text classifier-free
            guidance learns the unconditional context from these).
        tokenizer: a tokenizer directory (the BAGEL release's); None uses the one the build trained.
    """

    subset = SUBSET

    def __init__(
        self,
        root: str | os.PathLike[str] = "data/multiturn",
        num_trajectories: int = 10_000,
        world: str = "default",
        augment: float = 0.0,
        seed: int = 0,
        packing: str = "tiny",
        max_tokens: int = 4096,
        num_workers: int = 1,
        val_size: int = 64,
        samples_per_shard: int = 500,
        shuffle_buffer: int = 1000,
        prompt_dropout: float = 0.1,
        tokenizer: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            root, seed, packing, max_tokens, num_workers, shuffle_buffer, prompt_dropout, tokenizer
        )
        self.build_spec = MultiTurnSpec(num_trajectories, val_size, seed, world, augment, samples_per_shard)

    def spec(self) -> dict[str, Any]:
        return self.build_spec.to_dict()

    def build(self) -> dict[str, Any]:
        return build_multiturn(self.root, self.build_spec, progress=True)
