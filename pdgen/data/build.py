"""Building the training subsets from the shapes world: the multi-turn generation subset and its tokenizer.

The paper's *multi-turn generation* subset is prompts whose scene is built one step at a time: each step is a
Plan (``<ins>`` the incremental instruction, ``<des>`` the whole scene after it) and the Sketch of that
state. Here the world is the editor and the renderer, so every intermediate image is exact:

    ShapesEval train prompt --rollout(prompt, seed, world, augment)--> [(StepGoal, image), ...]
                            --> Trajectory(prompt, [Plan(ins, des), Sketch(image), Plan, Sketch, ...])

What is in this file, top to bottom:
- ``MultiTurnSpec``: what a build is (how many trajectories, seed, world preset, augmentation); it is
  recorded in the manifest, so a later build can tell whether existing shards are the ones asked for;
- ``multiturn_trajectory(spec, index)``: trajectory number ``index`` of a build, a function of
  ``(spec.seed, index)`` alone: builds are reproducible, and any range of them can be made on its own;
- ``build_multiturn``: writes a whole build (train and validation shards, tokenizer, manifest) with
  ``pdgen.data.shards``;
- ``train_world_tokenizer``: the embedded default's tokenizer, trained on the built trajectories' text.

Prompts come from ShapesEval's *train* split (``shapes_eval_prompts("train")``, whose tuples never occur in
the test split the model is evaluated on), with the split's own fixed seed so train and test stay disjoint
whatever the data seed is. Each trajectory draws a tag uniformly, then a prompt of that tag: GenEval scores
the mean of tag means, and the enumeration is dominated by ``color_attr`` (756 of 832 prompts).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from pdgen.console import Counter as ProgressCounter
from pdgen.console import counter
from pdgen.data.shards import ShardSetWriter, SubsetStats, write_manifest
from pdgen.data.tokenizer import save_tokenizer, train_tokenizer
from pdgen.errors import UserError
from pdgen.trajectory import Plan, Sketch, Trajectory
from pdgen.world.config import WorldConfig
from pdgen.world.prompts import shapes_eval_prompts
from pdgen.world.rollout import rollout

log = logging.getLogger(__name__)

SUBSET = "multiturn"
"""The manifest's ``subset`` for this build."""
TOKENIZER_DIR = "tokenizer"
"""Where, under a build's root, the embedded tokenizer is saved."""
TOKENIZER_VOCAB = 1024
"""Size of the embedded tokenizer; the ``tiny`` trunk's embedding has exactly this many rows."""
AUGMENT_FLAG = 0.5
"""The augmentation probability that ``--augment`` means on the command line (as ``pdgen data plan``)."""
_PROMPT_SPLIT_SEED = 0
"""ShapesEval's split seed: the train/test split the evaluation uses (``shapes_eval_prompts``'s default)."""
_VAL_OFFSET = 1 << 40
"""Validation trajectories are numbered from here, so they never share a seed with a training one."""


@dataclass(frozen=True)
class MultiTurnSpec:
    """What a multi-turn build contains; equal specs give byte-identical trajectories.

    Args:
        num_trajectories: training trajectories.
        val_size: held-out trajectories (same prompts, other seeds) for validation.
        seed: the data seed; trajectory ``i`` depends on ``(seed, i)`` only.
        world: the world preset (``WorldConfig.from_name``: default, large, all).
        augment: probability that the planner rewrites a step into an edit (recolor, replace, remove, move).
        samples_per_shard: trajectories per webdataset shard. Readers (workers x ranks) split whole shards
            when there are at least as many shards as readers; otherwise each reads every shard.
    """

    num_trajectories: int = 10_000
    val_size: int = 64
    seed: int = 0
    world: str = "default"
    augment: float = 0.0
    samples_per_shard: int = 500

    def __post_init__(self) -> None:
        check_spec(self, {"num_trajectories": 1, "val_size": 0, "samples_per_shard": 1}, ("augment",))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def multiturn_trajectory(
    spec: MultiTurnSpec, index: int, dead_ends: Counter[str] | None = None
) -> Trajectory:
    """Trajectory number ``index`` of the build ``spec`` (validation ones are numbered from ``_VAL_OFFSET``).

    One generator seeded with ``(spec.seed, index)`` draws the tag, the prompt and the rollout's seed. Plans
    whose layout dead-ended before the rollout found one are added to ``dead_ends`` by operation.
    """
    rng = np.random.default_rng([spec.seed, index])
    groups = train_prompts_by_tag(spec.world)
    group = groups[rng.integers(len(groups))]
    prompt = group[rng.integers(len(group))]
    seed = int(rng.integers(1 << 62))
    steps = rollout(prompt, seed, world_config(spec.world), augment=spec.augment, dead_ends=dead_ends)
    parts = [part for step in steps for part in (Plan(step.goal.ins, step.goal.des), Sketch(step.image))]
    return Trajectory(prompt, parts)


def split_indexes(split: str, num_train: int, num_val: int) -> range:
    """The sample numbers of one split of a world build: ``train`` from 0, ``val`` from 2**40, so that a
    validation sample never shares a seed with a training one."""
    if split == "train":
        return range(num_train)
    if split == "val":
        return range(_VAL_OFFSET, _VAL_OFFSET + num_val)
    raise ValueError(f"unknown split {split!r}; splits are 'train' and 'val'")


def multiturn_trajectories(
    spec: MultiTurnSpec, split: str = "train", dead_ends: Counter[str] | None = None
) -> Iterator[Trajectory]:
    """Every trajectory of one split of the build, in index order (dead ends added to ``dead_ends``)."""
    indexes = split_indexes(split, spec.num_trajectories, spec.val_size)
    return (multiturn_trajectory(spec, index, dead_ends) for index in indexes)


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
) -> tuple[dict[str, Any], SubsetStats, list[str]]:
    """Write the ``train`` then the ``val`` shards of a world build, samples keyed ``{split}{number:09d}``.

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
                    texts.append(trajectory.to_text())
                bar.update()
        splits[split] = writer.entry
    bar.close()
    return splits, stats, texts


def build_multiturn(
    root: str | os.PathLike[str], spec: MultiTurnSpec, progress: bool = False
) -> dict[str, Any]:
    """Write the multi-turn subset under ``root``: shards, tokenizer and, last, the manifest; returns it.

    Layout: ``train-NNNNNN.tar`` and ``val-NNNNNN.tar`` shards, ``tokenizer/``, ``manifest.json``. Every
    file lands atomically and the manifest is written last, so a build that is interrupted leaves no
    manifest and is rebuilt from scratch by the next ``prepare_data``.

    Args:
        root: the output directory (created).
        spec: what to build.
        progress: show progress on stderr (`pdgen.console.counter`: a bar, or lines in a log file).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log.info("building %d + %d multi-turn trajectories in %s (%s)", spec.num_trajectories, spec.val_size,
             root, spec)  # fmt: skip
    dead_ends: Counter[str] = Counter()
    total = spec.num_trajectories + spec.val_size
    bar = counter(total, f"building {SUBSET} in {root}", "trajectories", progress)
    splits, stats, texts = write_splits(
        root, spec.samples_per_shard, lambda split: multiturn_trajectories(spec, split, dead_ends), bar
    )
    train_world_tokenizer(texts, root / TOKENIZER_DIR)
    manifest = {
        "subset": SUBSET,
        "spec": spec.to_dict(),
        "tokenizer": TOKENIZER_DIR,
        "splits": splits,
        "stats": stats.table(),
        "dead_ends": dict(sorted(dead_ends.items())),
    }
    write_manifest(root, manifest)
    log.info("wrote %s: %s", root, stats.table())
    return manifest
