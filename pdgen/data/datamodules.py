"""The DataModules: shards of trajectories in, one ``PackedBatch`` per training step out, resumable exactly.

What is in this file, top to bottom:
- ``PackedTrajectoryDataset``: an ``IterableDataset`` that reads ``(where, trajectory)`` pairs from a
  ``TrajectoryStream`` (``pdgen.data.shards.ShardSource``), lays each out with ``TrajectoryPacker.sample``,
  fills packs to a token budget with ``TokenBudgetPacker`` and collates each pack into a ``PackedBatch``;
- ``PackedDataModule``: what every DataModule here shares — the packing preset, the tokenizer, the data
  loaders, the count of skipped samples (``pdgen.data.skips``, reported in TensorBoard and at the end of
  the run) and the data position (``state_dict``); a subclass says where its trajectories come from
  (``stream``);
- ``ShardDataModule``: a shard set under ``root`` — the manifest, the build's tokenizer; a subset says only
  how to build its shards (``build``) and what spec they must have (``spec``);
- the paper's three subsets: ``MultiTurnDataModule`` (multi-turn generation), ``ConflictDataModule``
  (instruction-intermediate conflicts, ``pdgen.data.conflict``) and ``AlignmentDataModule``
  (image-instruction alignment, ``pdgen.data.alignment``);
- ``MixedStream`` and ``MixtureDataModule``: the full recipe, subsets drawn by weight before packing, with
  one tokenizer, one skip counter and one data position.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pdgen.data.build import SUBSET, MultiTurnSpec, build_multiturn
from pdgen.data.conflict import SUBSET as CONFLICT
from pdgen.data.conflict import ConflictSpec, build_conflict
from pdgen.data.packing import PackedBatch, PackingConfig, TokenBudget, TokenBudgetPacker, TrajectoryPacker
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


class PackedDataModule(L.LightningDataModule):
    """Base of every DataModule here: a trajectory stream read as packs, and the exact data position.

    It holds what packing needs (the packing preset, the token budget, the tokenizer), the loaders, the
    count of skipped samples (``skipped``) and ``state_dict``. A subclass loads ``tokenizer`` in ``setup``
    and says where trajectories come from (``stream``); the readers and the packer count what they skip.

    The skip counts reach the logger as ``data/skipped_<cause>`` every ``log_every_n_steps`` training
    steps, and one line at the end of a fit says how many samples were skipped and why.

    Args:
        seed: seeds the stream (shard order, shuffle, mixture draws) and prompt dropout.
        packing: the ``PackingConfig`` preset named like the trunk (``tiny`` or ``bagel-7b-mot``).
        max_tokens: capacity of a pack, in tokens (a pack is emitted once 97 % full).
        num_workers: DataLoader worker processes for training (0 reads in the main process).
        shuffle_buffer: trajectories held for shuffling within a reader.
        prompt_dropout: probability that a training sample's prompt is left out, so the model also learns the
            unconditional context of text classifier-free guidance.
        tokenizer: a tokenizer directory (the BAGEL release's); None uses the one the data was built with.
        layout: how a trajectory becomes a training sample (``pdgen.data.sample_layout``): ``process`` (the
            paper's interleaved sequence), ``single_pass`` (prompt -> final image), ``caption`` (base stage).
        text_dropout: probability that a training sample loses every text, prompt, plans and inspections
            (``process`` only): the unconditional context of text CFG that guides with the images alone.
    """

    def __init__(
        self,
        seed: int = 0,
        packing: str = "tiny",
        max_tokens: int = 4096,
        num_workers: int = 1,
        shuffle_buffer: int = 1000,
        prompt_dropout: float = 0.1,
        tokenizer: str | os.PathLike[str] | None = None,
        layout: LayoutName = "process",
        text_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.seed = seed
        self.packing_config = PackingConfig.from_name(packing)
        self.budget = TokenBudget.around(max_tokens)
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.prompt_dropout = prompt_dropout
        self.layout_name = layout
        self.text_dropout = text_dropout
        self.train_layout(), self.val_layout()  # bad names and probabilities fail here, before any work
        self.tokenizer_path = None if tokenizer is None else Path(tokenizer)
        self.tokenizer: Any = None
        self.skipped = SkipCounter(num_workers)
        self.packs_consumed = 0

    def stream(self, split: str) -> TrajectoryStream:
        """Where the trajectories of ``split`` (``train``: shuffled, ``val``: in order) come from."""
        raise NotImplementedError(f"{type(self).__name__} must say where its trajectories come from (stream)")

    image_to_text: float = 0.0
    """Share of image -> caption samples of the ``caption`` layout (the base stage sets it)."""

    def train_layout(self) -> Layout:
        """The training samples' layout, with condition dropout."""
        return make_layout(self.layout_name, self.prompt_dropout, self.text_dropout, self.image_to_text)

    def val_layout(self) -> Layout:
        """The validation samples' layout: the same, every condition kept."""
        return make_layout(self.layout_name, image_to_text=self.image_to_text)

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
        mine = {"num_workers": self.num_workers, "world_size": self._rank_and_world[1], "seed": self.seed}
        different = {k: (state_dict[k], v) for k, v in mine.items() if state_dict[k] != v}
        if different:
            raise ValueError(
                f"cannot resume the data stream exactly: (checkpoint, now) differ for {different}; the pack "
                "order depends on the seed, the number of workers and the world size"
            )
        self.packs_consumed = state_dict["packs_consumed"]


class ShardDataModule(PackedDataModule):
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
        layout: how a trajectory becomes a training sample: ``process``, ``single_pass`` or ``caption``
            (``pdgen.data.sample_layout``).
        text_dropout: probability that a training sample loses every text (``process`` only; the
            unconditional context of text CFG that guides with the images alone).
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
        layout: LayoutName = "process",
        text_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            seed, packing, max_tokens, num_workers, shuffle_buffer, prompt_dropout, tokenizer, layout,
            text_dropout,
        )  # fmt: skip
        self.root = Path(root)
        self.manifest: dict[str, Any] | None = None

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
        self.tokenizer = load_tokenizer(self.tokenizer_path or self.build_tokenizer)

    @property
    def build_tokenizer(self) -> Path:
        """The tokenizer directory the build saved (after ``setup``)."""
        if self.manifest is None:
            raise ValueError(f"{type(self).__name__}.setup() has not run: no manifest yet")
        return self.root / self.manifest["tokenizer"]

    def stream(self, split: str) -> TrajectoryStream:
        return self.source(split).trajectories

    def source(
        self, split: str, skipped: SkipCounter | None = None, seed: int | None = None
    ) -> ShardSource:
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


class MultiTurnDataModule(ShardDataModule):
    """The multi-turn generation subset: ShapesEval train prompts built step by step in the shapes world.

    Each trajectory is Plan, Sketch, Plan, Sketch, …: the incremental instruction and scene description
    of every step, and the world's exact render of it (``pdgen.data.build``). ``prepare_data`` builds the
    shards and the tokenizer under ``root`` when they are missing (the default 10,000 trajectories take
    about a minute and a half on a 2-core CPU; docs/benchmarks.md).

    Args:
        root: the shard set's directory; built there if it holds none.
        num_trajectories: training trajectories to build.
        world: the shapes world preset (default, large, all).
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
        layout: how a trajectory becomes a training sample: ``process``, ``single_pass`` or ``caption``
            (``pdgen.data.sample_layout``).
        text_dropout: probability that a training sample loses every text (``process`` only; the
            unconditional context of text CFG that guides with the images alone).
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
        layout: LayoutName = "process",
        text_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            root, seed, packing, max_tokens, num_workers, shuffle_buffer, prompt_dropout, tokenizer, layout,
            text_dropout,
        )  # fmt: skip
        self.build_spec = MultiTurnSpec(num_trajectories, val_size, seed, world, augment, samples_per_shard)

    def spec(self) -> dict[str, Any]:
        return self.build_spec.to_dict()

    def build(self) -> dict[str, Any]:
        return build_multiturn(self.root, self.build_spec, progress=True)


class ConflictDataModule(ShardDataModule):
    """The instruction-intermediate conflict subset (``pdgen.data.conflict``): steps inspected against the
    prompt, positives saying why a step is fine, negatives naming the conflict with a ``<refine>`` and the
    corrected step.

    Self-sampled from a stage-1 checkpoint (``from_ckpt``, the paper's method) or, without one, symbolic:
    scene-graph perturbations (the paper's Table 6 ablation). A ``from_ckpt`` that does not exist yet falls
    back to the symbolic set and says so, so the recipe runs on a fresh machine.

    Args:
        root: the parent directory: shards go to ``root/symbolic`` or ``root/self-sampled``.
        num_samples: training samples to build.
        from_ckpt: a stage-1 ``ProcessDrivenModule`` checkpoint to self-sample from.
        tokenizer: the tokenizer directory the checkpoint was trained with (needed with ``from_ckpt``;
            copied into the build and used to read it); None trains the embedded tokenizer on the texts.
        world: the shapes world preset (default, large, all).
        negative_fraction: share of negatives among symbolic samples (the paper's 8,296 of 15,201).
        num_timesteps: flow steps per image while self-sampling (the images are not kept).
        seed: seeds the build, the shard order, the shuffle and prompt dropout.
        packing: the ``PackingConfig`` preset named like the trunk (``tiny`` or ``bagel-7b-mot``).
        max_tokens: capacity of a pack, in tokens.
        num_workers: DataLoader worker processes for training.
        val_size: held-out samples.
        samples_per_shard: samples per shard.
        shuffle_buffer: samples held for shuffling within a reader.
        prompt_dropout: probability that a training sample's prompt is left out.
    """

    subset = CONFLICT

    def __init__(
        self,
        root: str | os.PathLike[str] = "data/conflict",
        num_samples: int = 5000,
        from_ckpt: str | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        world: str = "default",
        negative_fraction: float = 0.55,
        num_timesteps: int = 10,
        seed: int = 0,
        packing: str = "tiny",
        max_tokens: int = 4096,
        num_workers: int = 1,
        val_size: int = 64,
        samples_per_shard: int = 500,
        shuffle_buffer: int = 1000,
        prompt_dropout: float = 0.1,
    ) -> None:
        if from_ckpt is not None and not Path(from_ckpt).is_file():
            log.warning(
                "ConflictDataModule: the stage-1 checkpoint %s does not exist (has stage 1 run?): using the "
                "symbolic conflict set instead",
                from_ckpt,
            )
            from_ckpt = None
        spec = ConflictSpec(
            num_samples=num_samples,
            val_size=val_size,
            seed=seed,
            world=world,
            negative_fraction=negative_fraction,
            from_ckpt=from_ckpt,
            # Only self-sampling needs it at build time: a symbolic build may come before the tokenizer does
            # (the recipe's, trained by the base stage after the subsets are built).
            tokenizer=None if tokenizer is None or from_ckpt is None else str(tokenizer),
            packing=packing,
            num_timesteps=num_timesteps,
            samples_per_shard=samples_per_shard,
        )
        root = Path(root) / spec.mode
        super().__init__(
            root, seed, packing, max_tokens, num_workers, shuffle_buffer, prompt_dropout, tokenizer
        )
        self.build_spec = spec
        # A warning, not info: nothing configures logging below WARNING, and which conflict set a run trains
        # on is the difference between the paper's method and its ablation.
        if spec.from_ckpt is None:
            log.warning(
                "ConflictDataModule: using the symbolic conflict set (scene-graph perturbations, the paper's "
                "Table 6 ablation) in %s, since no stage-1 checkpoint is given (from_ckpt)",
                self.root,
            )
        else:
            log.warning(
                "ConflictDataModule: the conflict set self-sampled from %s (%s)", spec.from_ckpt, root
            )

    def spec(self) -> dict[str, Any]:
        return self.build_spec.to_dict()

    def build(self) -> dict[str, Any]:
        return build_conflict(self.root, self.build_spec, progress=True)


class AlignmentDataModule(ShardDataModule):
    """The image-instruction alignment subset (``pdgen.data.alignment``): draft images inspected against their
    step's instruction, positives explained, negatives (twice as many) analysed with a ``<refine>``.

    Args:
        root: the shard set's directory; built there if it holds none.
        num_samples: training samples to build (the paper's 15,000: 5,000 positive, 10,000 negative).
        world: the shapes world preset (default, large, all).
        augment: the planner's probability of edit steps in the rollouts.
        negatives_per_positive: negatives per positive (2 in the paper).
        seed: seeds the build, the shard order, the shuffle and prompt dropout.
        packing: the ``PackingConfig`` preset named like the trunk (``tiny`` or ``bagel-7b-mot``).
        max_tokens: capacity of a pack, in tokens.
        num_workers: DataLoader worker processes for training.
        val_size: held-out samples.
        samples_per_shard: samples per shard.
        shuffle_buffer: samples held for shuffling within a reader.
        prompt_dropout: probability that a training sample's prompt is left out.
        tokenizer: a tokenizer directory; None uses the one the build trained.
    """

    subset = "alignment"

    def __init__(
        self,
        root: str | os.PathLike[str] = "data/alignment",
        num_samples: int = 15_000,
        world: str = "default",
        augment: float = 0.0,
        negatives_per_positive: int = 2,
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
        from pdgen.data.alignment import AlignmentSpec

        super().__init__(
            root, seed, packing, max_tokens, num_workers, shuffle_buffer, prompt_dropout, tokenizer
        )
        self.build_spec = AlignmentSpec(
            num_samples=num_samples,
            val_size=val_size,
            seed=seed,
            world=world,
            augment=augment,
            negatives_per_positive=negatives_per_positive,
            samples_per_shard=samples_per_shard,
        )

    def spec(self) -> dict[str, Any]:
        return self.build_spec.to_dict()

    def build(self) -> dict[str, Any]:
        from pdgen.data.alignment import build_alignment

        return build_alignment(self.root, self.build_spec, progress=True)


@dataclass
class MixedStream:
    """Several trajectory streams as one: drawn by weight for training, one after another for validation.

    Training (``weights`` given): every sample is drawn from subset ``i`` with probability ``weights[i]``
    (normalised) by a generator seeded with ``(seed, reader)``; each subset's stream runs epoch after epoch
    on its own, so a small subset repeats while a large one is still in its first epoch. The draw is a
    function of the seed and the reader alone, which is what exact resumption replays. Validation (no
    ``weights``): one pass over every stream, a sample of each in turn.

    Args:
        streams: the subsets' streams (``ShardSource.trajectories``).
        names: the subsets' names, for errors.
        weights: sampling weights, one per stream; None reads each stream once, taking turns.
        seed: seeds the draws.
    """

    streams: Sequence[TrajectoryStream]
    names: Sequence[str]
    weights: Sequence[float] | None = None
    seed: int = 0

    def __call__(self, epoch: int, part: ReaderPart) -> Iterator[tuple[str, Any]]:
        if self.weights is None:
            return self._in_turn(epoch, part)
        return self._interleaved(part)

    def _in_turn(self, epoch: int, part: ReaderPart) -> Iterator[tuple[str, Any]]:
        """One sample of each stream in turn until all are spent: a validation capped at a few packs
        (``limit_val_batches``) still sees every subset."""
        sentinel = object()
        for row in itertools.zip_longest(
            *(stream(epoch, part) for stream in self.streams), fillvalue=sentinel
        ):
            yield from (item for item in row if item is not sentinel)

    def _interleaved(self, part: ReaderPart) -> Iterator[tuple[str, Any]]:
        rng = np.random.default_rng([self.seed, part.index])
        p = np.asarray(self.weights, dtype=float) / sum(self.weights)
        sources = [
            self._forever(stream, name, part) for stream, name in zip(self.streams, self.names, strict=True)
        ]
        while True:
            yield next(sources[int(rng.choice(len(sources), p=p))])

    @staticmethod
    def _forever(stream: TrajectoryStream, name: str, part: ReaderPart) -> Iterator[tuple[str, Any]]:
        for epoch in itertools.count():
            empty = True
            for item in stream(epoch, part):
                empty = False
                yield item
            if empty:
                raise ValueError(
                    f"subset {name!r}: reader {part} got no readable sample in epoch {epoch}: it has fewer "
                    "samples than readers (workers x ranks), or all are corrupt"
                )


class MixtureDataModule(PackedDataModule):
    """The full recipe's data: several subsets interleaved by weight, then packed together.

    Each subset is a ``ShardDataModule`` (built by its own ``prepare_data``); samples are drawn from the
    subsets by weight *before* packing, so one pack mixes subsets. Everything about reading — the packing
    preset, the token budget, workers, shuffle buffer, prompt dropout, the seed, the skip counts and the
    exact data position — is the mixture's own; the subsets' values for those are not used.

    One tokenizer reads every subset: ``tokenizer`` if given, else the first subset's build tokenizer (the
    multi-turn one in the recipe, which the stage-1 checkpoint was trained with).

    Args:
        subsets: the subsets by name (``multiturn``, ``conflict``, ``alignment``), or a list of them.
        weights: sampling weight per subset (by name for a dict, in order for a list); the paper's subset
            sizes, 30K / 15K / 15K, are 2 / 1 / 1. None weighs the subsets equally.
        seed: seeds the draws, the shard order, the shuffle and prompt dropout.
        packing: the ``PackingConfig`` preset named like the trunk (``tiny`` or ``bagel-7b-mot``).
        max_tokens: capacity of a pack, in tokens.
        num_workers: DataLoader worker processes for training.
        shuffle_buffer: samples held for shuffling within each subset's reader.
        prompt_dropout: probability that a training sample's prompt is left out.
        tokenizer: the tokenizer directory for every subset; None takes the first subset's.
        text_dropout: probability that a training sample loses every text (prompt, plans, inspections): the
            unconditional context of text CFG that guides with the images alone.
    """

    def __init__(
        self,
        subsets: dict[str, ShardDataModule] | list[ShardDataModule],
        weights: dict[str, float] | list[float] | None = None,
        seed: int = 0,
        packing: str = "tiny",
        max_tokens: int = 4096,
        num_workers: int = 1,
        shuffle_buffer: int = 1000,
        prompt_dropout: float = 0.1,
        tokenizer: str | os.PathLike[str] | None = None,
        text_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            seed, packing, max_tokens, num_workers, shuffle_buffer, prompt_dropout, tokenizer,
            text_dropout=text_dropout,
        )  # fmt: skip
        named = dict(subsets) if isinstance(subsets, dict) else {str(i): s for i, s in enumerate(subsets)}
        if not named:
            raise ValueError("MixtureDataModule.subsets is empty: give at least one subset")
        if weights is None:
            weights = {name: 1.0 for name in named}
        elif not isinstance(weights, dict):
            if len(weights) != len(named):
                raise ValueError(f"MixtureDataModule: {len(weights)} weights for {len(named)} subsets")
            weights = dict(zip(named, weights, strict=True))
        if set(weights) != set(named):
            raise ValueError(
                f"MixtureDataModule.weights names {sorted(weights)}, the subsets are {sorted(named)}"
            )
        bad = {name: w for name, w in weights.items() if not w >= 0}
        if bad or sum(weights.values()) <= 0:
            raise ValueError(f"MixtureDataModule.weights must be >= 0 with a positive sum, got {weights}")
        self.subsets = named
        self.weights = {name: float(weights[name]) for name in named}

    def prepare_data(self) -> None:
        """Build every subset's shards that are missing."""
        for subset in self.subsets.values():
            subset.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Set every subset up and load the one tokenizer."""
        from pdgen.data.tokenizer import load_tokenizer

        for subset in self.subsets.values():
            subset.setup(stage)
        path = self.tokenizer_path or next(iter(self.subsets.values())).build_tokenizer
        self.tokenizer = load_tokenizer(path)
        roots = ", ".join(f"{name} ({subset.root})" for name, subset in self.subsets.items())
        log.info("mixture of %s with weights %s; tokenizer %s", roots, self.weights, path)

    def stream(self, split: str) -> TrajectoryStream:
        """Training draws by weight and never reads a subset of weight 0; ``val`` reads every subset's
        held-out samples once, one from each in turn."""
        names = [n for n in self.subsets if split != "train" or self.weights[n] > 0]
        streams = [self._subset_stream(n, split) for n in names]
        weights = [self.weights[n] for n in names] if split == "train" else None
        return MixedStream(streams, names, weights, self.seed)

    @property
    def val_names(self) -> list[str]:  # type: ignore[override]
        return list(self.subsets)

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per subset (``val_names``), every subset's held-out samples, weight 0 too: the module
        logs each subset's losses apart (``val/<subset>/...``), so a run without a subset is still measured
        on it (the Table 7 ablations)."""
        return [self._val_loader(self._subset_stream(name, "val")) for name in self.subsets]

    def _subset_stream(self, name: str, split: str) -> TrajectoryStream:
        return self.subsets[name].source(split, self.skipped, self.seed).trajectories
