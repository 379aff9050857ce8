"""The subsets' DataModules and the mixture: what the recipes' ``data:`` sections name.

What is in this file, top to bottom:
- the paper's three subsets: ``MultiTurnDataModule`` (multi-turn generation, ``pdgen.data.multiturn``),
  ``ConflictDataModule`` (instruction-intermediate conflicts, ``pdgen.data.conflict``) and
  ``AlignmentDataModule`` (image-instruction alignment, ``pdgen.data.alignment``); the base stage's and the
  edit subset's DataModules are beside their builds (``pdgen.data.base``, ``pdgen.data.edit``);
- ``MixedStream`` and ``MixtureDataModule``: the full recipe, subsets drawn by weight before packing, with
  one reader, one tokenizer, one skip counter and one data position.

How every one of them reads (``ReaderConfig``, the packs, exact resumption) is ``pdgen.data.reading``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import DataLoader

from pdgen.data.alignment import SUBSET as ALIGNMENT
from pdgen.data.alignment import AlignmentSpec, build_alignment
from pdgen.data.conflict import SUBSET as CONFLICT
from pdgen.data.conflict import SYMBOLIC, ConflictSource, ConflictSpec, build_conflict
from pdgen.data.multiturn import SUBSET as MULTITURN
from pdgen.data.multiturn import MultiTurnSpec, build_multiturn
from pdgen.data.packing_config import PackingGeometry
from pdgen.data.reading import PackedDataModule, ReaderConfig, ShardDataModule
from pdgen.data.shards import ReaderPart, TrajectoryStream
from pdgen.errors import UserError

log = logging.getLogger(__name__)


class MultiTurnDataModule(ShardDataModule):
    """The multi-turn generation subset: ShapesEval train prompts built step by step in the shapes world.

    Each trajectory is Plan, Sketch, Plan, Sketch, …: the incremental instruction and scene description
    of every step, and the world's exact render of it (``pdgen.data.multiturn``). ``prepare_data`` builds the
    shards and the tokenizer under ``root`` when they are missing (the default 10,000 trajectories take
    about a minute and a half on a 2-core CPU; docs/benchmarks.md).

    Args:
        root: the shard set's directory; built there if it holds none.
        build: the trajectories to build (``pdgen.data.multiturn.MultiTurnSpec``: ``num_trajectories``,
            ``augment``, ...); its ``seed`` also seeds the shard order, the shuffle and prompt dropout.
        tokenizer: a tokenizer directory (the BAGEL release's); None uses the one the build trained.
        reader: how trajectories are read into packs (``pdgen.data.reading.ReaderConfig``).
        geometry: the trunk's image geometry; ``pdgen fit`` links it from ``model.trunk``.
    """

    subset = MULTITURN
    builder = staticmethod(build_multiturn)

    def __init__(
        self,
        root: str | os.PathLike[str] = "data/multiturn",
        build: MultiTurnSpec = MultiTurnSpec(),
        tokenizer: str | os.PathLike[str] | None = None,
        reader: ReaderConfig = PackedDataModule.default_reader,
        geometry: PackingGeometry | None = None,
    ) -> None:
        super().__init__(root, build, tokenizer, reader, geometry)


class ConflictDataModule(ShardDataModule):
    """The instruction-intermediate conflict subset (``pdgen.data.conflict``): steps inspected against the
    prompt, positives saying why a step is fine, negatives naming the conflict with a ``<refine>`` and the
    corrected step.

    Self-sampled from a stage-1 checkpoint (``from_ckpt``, the paper's method) or symbolic
    (``from_ckpt: symbolic``): scene-graph perturbations (the paper's Table 6 ablation). A ``from_ckpt`` that
    does not exist is a ValueError naming it, so a mistyped path never trains the ablation silently, unless
    ``missing_ckpt: symbolic`` asks for the symbolic set until the checkpoint is there (the recipe, so that
    it runs on a fresh machine; a warning says which set is used).

    Args:
        root: the parent directory: shards go to ``root/symbolic`` or ``root/self-sampled``.
        build: the samples to build (``pdgen.data.conflict.ConflictSpec``: ``num_samples``,
            ``negative_fraction``, ``num_timesteps`` while self-sampling, ...); its ``seed`` also seeds the
            shard order, the shuffle and prompt dropout.
        from_ckpt: a stage-1 ``ProcessDrivenModule`` checkpoint to self-sample from, or ``symbolic`` for the
            symbolic set (None, no checkpoint, is the symbolic set too).
        missing_ckpt: what a ``from_ckpt`` file that does not exist means: ``error`` (a ValueError naming
            it) or ``symbolic`` (the symbolic set until stage 1 has written it).
        tokenizer: the tokenizer directory the checkpoint was trained with (needed with ``from_ckpt``;
            copied into the build and used to read it); None trains the embedded tokenizer on the texts.
        reader: how samples are read into packs (``pdgen.data.reading.ReaderConfig``); its ``packing`` is
            also the preset the checkpoint was trained with, for self-sampling.
        geometry: the trunk's image geometry, linked from ``model.trunk`` by ``pdgen fit``.
    """

    subset = CONFLICT

    def __init__(
        self,
        root: str | os.PathLike[str] = "data/conflict",
        build: ConflictSpec = ConflictSpec(),
        from_ckpt: str | None = None,
        missing_ckpt: Literal["error", "symbolic"] = "error",
        tokenizer: str | os.PathLike[str] | None = None,
        reader: ReaderConfig = PackedDataModule.default_reader,
        geometry: PackingGeometry | None = None,
    ) -> None:
        if missing_ckpt not in ("error", SYMBOLIC):
            raise ValueError(
                f"ConflictDataModule.missing_ckpt={missing_ckpt!r}; expected 'error' or 'symbolic'"
            )
        why_symbolic = "no stage-1 checkpoint is given (from_ckpt)"
        if from_ckpt == SYMBOLIC:
            from_ckpt, why_symbolic = None, "the config asks for it (from_ckpt: symbolic)"
        elif from_ckpt is not None and not Path(from_ckpt).is_file():
            if missing_ckpt == "error":
                raise UserError(
                    f"ConflictDataModule.from_ckpt={from_ckpt!r}: no such checkpoint file (has stage 1 "
                    "run?); for the symbolic conflict set say from_ckpt: symbolic, or missing_ckpt: symbolic "
                    "to fall back to it while the checkpoint is not there yet"
                )
            why_symbolic = f"the stage-1 checkpoint {from_ckpt} is not there yet (missing_ckpt: symbolic)"
            from_ckpt = None
        self.conflict_source = ConflictSource(
            from_ckpt=from_ckpt,
            # Only self-sampling needs it at build time: a symbolic build may come before the tokenizer does
            # (the recipe's, trained by the base stage after the subsets are built).
            tokenizer=None if tokenizer is None or from_ckpt is None else str(tokenizer),
            packing=reader.packing,
        )
        super().__init__(Path(root) / self.conflict_source.mode, build, tokenizer, reader, geometry)
        # A warning, not info: nothing configures logging below WARNING, and which conflict set a run trains
        # on is the difference between the paper's method and its ablation.
        if from_ckpt is None:
            log.warning(
                "ConflictDataModule: using the symbolic conflict set (scene-graph perturbations, the paper's "
                "Table 6 ablation) in %s, since %s",
                self.root,
                why_symbolic,
            )
        else:
            log.warning(
                "ConflictDataModule: the conflict set self-sampled from %s (%s)", from_ckpt, self.root
            )

    def spec(self) -> dict[str, Any]:
        return self.build_spec.to_dict(self.conflict_source)

    def build(self) -> dict[str, Any]:
        return build_conflict(self.root, self.build_spec, self.conflict_source, progress=True)


class AlignmentDataModule(ShardDataModule):
    """The image-instruction alignment subset (``pdgen.data.alignment``): draft images inspected against their
    step's instruction, positives explained, negatives (twice as many) analysed with a ``<refine>``.

    Args:
        root: the shard set's directory; built there if it holds none.
        build: the samples to build (``pdgen.data.alignment.AlignmentSpec``: ``num_samples``, the paper's
            15,000, ``negatives_per_positive``, the perturbation ``kinds``, ...); its ``seed`` also seeds
            the shard order, the shuffle and prompt dropout.
        tokenizer: a tokenizer directory; None uses the one its build trained.
        reader: how the samples are read into packs (``pdgen.data.reading.ReaderConfig``).
        geometry: the trunk's image geometry (``pdgen fit`` links it from ``model.trunk``).
    """

    subset = ALIGNMENT
    builder = staticmethod(build_alignment)

    def __init__(
        self,
        root: str | os.PathLike[str] = "data/alignment",
        build: AlignmentSpec = AlignmentSpec(),
        tokenizer: str | os.PathLike[str] | None = None,
        reader: ReaderConfig = PackedDataModule.default_reader,
        geometry: PackingGeometry | None = None,
    ) -> None:
        super().__init__(root, build, tokenizer, reader, geometry)


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
    subsets by weight *before* packing, so one pack mixes subsets. Everything about reading — the
    ``reader`` (packing preset, token budget, workers, shuffle buffer, layout, dropout), the seed of the
    stream, the skip counts and the exact data position — is the mixture's own. A subset whose ``reader``
    is not its class's default is a ValueError naming the subset and the fields: one pack and one loader
    serve every subset, so a subset's own reader could not be honoured, and a value silently unused is
    worse than an error (set it on the mixture's ``reader`` instead).

    One tokenizer reads every subset: ``tokenizer`` if given, else the first subset's build tokenizer (the
    multi-turn one in the recipe, which the stage-1 checkpoint was trained with).

    Args:
        subsets: the subsets by name (``multiturn``, ``conflict``, ``alignment``), or a list of them.
        weights: sampling weight per subset (by name for a dict, in order for a list); the paper's subset
            sizes, 30K / 15K / 15K, are 2 / 1 / 1. None weighs the subsets equally.
        seed: seeds the draws, the shard order, the shuffle and prompt dropout.
        tokenizer: the tokenizer directory for every subset; None takes the first subset's.
        reader: how every subset's samples are read into packs (``pdgen.data.reading.ReaderConfig``; its
            ``shuffle_buffer`` is each subset's).
        geometry: the trunk's image geometry; ``pdgen fit`` links it from ``model.trunk``.
    """

    def __init__(
        self,
        subsets: dict[str, ShardDataModule] | list[ShardDataModule],
        weights: dict[str, float] | list[float] | None = None,
        seed: int = 0,
        tokenizer: str | os.PathLike[str] | None = None,
        reader: ReaderConfig = PackedDataModule.default_reader,
        geometry: PackingGeometry | None = None,
    ) -> None:
        super().__init__(seed, reader, tokenizer, geometry)
        named = dict(subsets) if isinstance(subsets, dict) else {str(i): s for i, s in enumerate(subsets)}
        if not named:
            raise ValueError("MixtureDataModule.subsets is empty: give at least one subset")
        for name, subset in named.items():
            changed = subset.reader.changed(type(subset).default_reader)
            if changed:
                raise ValueError(
                    f"MixtureDataModule: subset {name!r} sets reader {changed}, but the mixture reads every "
                    "subset with its own reader: set these on the mixture's reader (data.init_args.reader) "
                    f"and leave the subset's at its defaults"
                )
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
