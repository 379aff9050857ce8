"""What every subset build shares: the spec checks, the train prompts, sample numbering, shards and tokenizer.

Each subset (``pdgen.data.multiturn``, ``conflict``, ``alignment``, ``base``, ``edit``, ``realimage``) is a
spec, a function from ``(spec, index)`` to a sample, and a ``build_*`` that writes the shard set. What they
have in common lives here:

- ``check_spec``: the checks every build spec makes (counts, probabilities, the world preset);
- ``world_config`` and ``train_prompt``: the world preset, and a ShapesEval *train* prompt drawn as every
  build draws one: a tag uniformly, then a prompt of it (GenEval scores the mean of tag means, and the
  enumeration is dominated by ``color_attr``, 756 of 832 prompts); or, as often as a build asks, a free
  graph's prompt (``pdgen.world.prompts.free_graph``);
- ``VAL_OFFSET`` and ``split_indexes``: validation samples are numbered from 2**40, so a validation sample
  never shares a seed with a training one;
- ``write_splits`` (and ``write_labelled_splits`` for the subsets with positives and negatives): the train
  then the val shards, with the statistics and the texts the tokenizer is trained on;
- ``train_world_tokenizer``: the embedded default's tokenizer, trained on a build's texts, and
  ``finish_build``: the tokenizer, then the manifest, written last;
- ``Label`` and ``SampleSkipped``: a reasoning sample's label, and a draw that gives no sample.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from pdgen.console import Counter as ProgressCounter
from pdgen.data.shards import ShardSetWriter, SubsetStats, write_manifest
from pdgen.data.tokenizer import save_tokenizer, train_tokenizer
from pdgen.errors import UserError
from pdgen.trajectory import Trajectory
from pdgen.world.config import WorldConfig
from pdgen.world.prompts import free_graph, shapes_eval_prompts

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
"""Where, under a build's root, the embedded tokenizer is saved."""
TOKENIZER_VOCAB = 1024
"""Size of the embedded tokenizer; the ``tiny`` trunk's embedding has exactly this many rows."""
VAL_OFFSET = 1 << 40
"""Validation samples are numbered from here, so they never share a seed with a training one."""
FREE_PROMPTS = 0.33
"""The multi-turn, conflict and alignment builds' share of free prompts (``train_prompt``'s ``free``)."""
INSPECTION_TEXTS = 2
"""The judges' wording of inspections, recorded in the spec of every build that holds them (conflict,
alignment, and base, whose tokenizer learns them): a build of other texts (1: the verdict first, before the
evidence) no longer matches its config and is named, instead of being read as if it were current."""
_PROMPT_SPLIT_SEED = 0
"""ShapesEval's split seed: the train/test split the evaluation uses (``shapes_eval_prompts``'s default)."""

Label = Literal["positive", "negative"]
"""A reasoning sample's label: its inspected step (or image) is consistent, or flawed."""


class SampleSkipped(ValueError):
    """A draw that gives no sample; ``outcome`` names why, for the build's counts."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def check_spec(spec: Any, at_least: dict[str, int], probabilities: tuple[str, ...] = ()) -> None:
    """The checks every build spec makes, each error naming the spec's class and field: counts below their
    least value, probabilities outside [0, 1], and a world preset that does not exist (`spec.world`)."""
    kind = type(spec).__name__
    for name, least in at_least.items():
        if getattr(spec, name) < least:
            raise UserError(f"{kind}.{name} must be >= {least}, got {getattr(spec, name)}")
    for name in probabilities:
        if not 0.0 <= getattr(spec, name) <= 1.0:
            raise UserError(f"{kind}.{name} is a probability in [0, 1], got {getattr(spec, name)}")
    world_config(spec.world)  # an unknown preset fails here, naming the presets


@cache
def world_config(name: str) -> WorldConfig:
    """The world preset ``name``, built once (every subset builder looks it up per sample)."""
    return WorldConfig.from_name(name)


@cache
def train_prompts_by_tag(world: str) -> tuple[tuple[str, ...], ...]:
    """ShapesEval's train prompts of ``world``, grouped by tag (every prompt: ``per_tag`` is unbounded)."""
    rows = shapes_eval_prompts("train", world_config(world), per_tag=1 << 30, seed=_PROMPT_SPLIT_SEED)
    tags = sorted({row["tag"] for row in rows})
    return tuple(tuple(row["prompt"] for row in rows if row["tag"] == tag) for tag in tags)


def train_prompt(world: str, rng: np.random.Generator, free: float = 0.0) -> str:
    """A train prompt of ``world``: a tag drawn uniformly, then a prompt of that tag (two draws of rng).

    With probability ``free``, a free graph's prompt instead (``free_graph``: no template, so neither
    split's). The coin is drawn only when ``free`` is above 0, so builds without free prompts keep their
    draws, and their bytes.
    """
    if free > 0 and rng.random() < free:
        return "a photo of " + free_graph(rng, world_config(world)).describe()
    groups = train_prompts_by_tag(world)
    group = groups[int(rng.integers(len(groups)))]
    return group[int(rng.integers(len(group)))]


def split_indexes(split: str, num_train: int, num_val: int) -> range:
    """The sample numbers of one split of a world build: ``train`` from 0, ``val`` from ``VAL_OFFSET``, so
    that a validation sample never shares a seed with a training one."""
    if split == "train":
        return range(num_train)
    if split == "val":
        return range(VAL_OFFSET, VAL_OFFSET + num_val)
    raise ValueError(f"unknown split {split!r}; splits are 'train' and 'val'")


def train_world_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike[str]) -> Path:
    """Train the embedded tokenizer (``TOKENIZER_VOCAB`` tokens) on ``texts`` and save it to ``out_dir``.

    Trained on the tagged text of the build's own trajectories (prompts, plans, tags), so the world's
    sentences are a few tokens each; any other text still encodes, byte by byte.
    """
    return save_tokenizer(train_tokenizer(texts, vocab_size=TOKENIZER_VOCAB), out_dir)


def write_splits(
    root: Path,
    samples_per_shard: int,
    trajectories: Callable[[str], Iterable[Trajectory]],
    bar: ProgressCounter,
    text: Callable[[Trajectory], str] = Trajectory.to_text,
) -> tuple[dict[str, Any], SubsetStats, list[str]]:
    """Write the ``train`` then the ``val`` shards of a world build, samples keyed ``{split}{number:09d}``.

    Args:
        root: the build's directory.
        samples_per_shard: samples per shard.
        trajectories: ``split -> trajectories``, in order.
        bar: counts every sample written; closed at the end.
        text: what the tokenizer learns of a training trajectory (default its whole tagged text).

    Returns:
        the manifest's ``splits``, the training samples' statistics, and their texts (for the tokenizer).
    """
    splits: dict[str, Any] = {}
    stats, texts = SubsetStats(), []
    for split in ("train", "val"):
        with ShardSetWriter(root, split, samples_per_shard) as writer:
            for number, trajectory in enumerate(trajectories(split)):
                writer.write(f"{split}{number:09d}", trajectory)
                if split == "train":
                    stats.add(trajectory)
                    texts.append(text(trajectory))
                bar.update()
        splits[split] = writer.entry
    bar.close()
    return splits, stats, texts


def finish_build(
    root: Path,
    head: dict[str, Any],
    spec: dict[str, Any],
    splits: dict[str, Any],
    stats: SubsetStats,
    texts: Iterable[str] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The end of every world build: the embedded tokenizer trained on ``texts`` (None: the build has put its
    tokenizer in place), then the manifest, written last, so an interrupted build leaves none.

    Args:
        root: the build's directory.
        head: the manifest's first fields (``subset``, and the conflict build's ``mode``).
        spec: the build's spec as the manifest records it (its ``to_dict()``).
        splits: ``write_splits``'s splits.
        stats: the training samples' statistics.
        texts: what the tokenizer learns.
        extra: the subset's own fields, after the common ones.

    Returns:
        the manifest.
    """
    if texts is not None:
        train_world_tokenizer(texts, root / TOKENIZER_DIR)
    manifest = {
        **head,
        "spec": spec,
        "tokenizer": TOKENIZER_DIR,
        "splits": splits,
        "stats": stats.table(),
        **extra,
    }
    write_manifest(root, manifest)
    log.info("wrote %s: %s", root, stats.table())
    return manifest


class LabelledSample(Protocol):
    """A reasoning subset's sample: its trajectory, its label and, for a negative, the kind of its flaw."""

    trajectory: Trajectory
    label: Label
    kind: str | None


def write_labelled_splits(
    root: Path,
    samples_per_shard: int,
    samples: Callable[[str], Iterable[LabelledSample]],
    bar: ProgressCounter,
) -> tuple[dict[str, Any], SubsetStats, list[str], Counter[str]]:
    """``write_splits`` for samples with a label: the statistics count the training positives and
    negatives, and the last value returned counts the training negatives by kind."""
    labels: Counter[str] = Counter()
    kinds: Counter[str] = Counter()

    def trajectories(split: str) -> Iterable[Trajectory]:
        for sample in samples(split):
            if split == "train":
                labels[sample.label] += 1
                if sample.label == "negative":
                    kinds[str(sample.kind)] += 1
            yield sample.trajectory

    splits, stats, texts = write_splits(root, samples_per_shard, trajectories, bar)
    stats.positives, stats.negatives = labels["positive"], labels["negative"]
    return splits, stats, texts, kinds
