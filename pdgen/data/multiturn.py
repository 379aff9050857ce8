"""The multi-turn generation subset: ShapesEval train prompts built step by step in the shapes world.

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
  ``pdgen.data.subset_build.write_splits``, and trains the embedded tokenizer on its texts.

Prompts come from ShapesEval's *train* split (``shapes_eval_prompts("train")``, whose tuples never occur in
the test split the model is evaluated on), with the split's own fixed seed so train and test stay disjoint
whatever the data seed is. Each trajectory draws a tag uniformly, then a prompt of that tag
(``pdgen.data.subset_build.train_prompt``), or, with probability ``free_prompts``, the prompt of a free scene
graph, one that no GenEval template writes (``pdgen.world.prompts.free_graph``: mixed colours, coloured counts
and relations, three objects), so that a planner cannot learn which classes go together instead of reading
the prompt.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdgen.console import counter
from pdgen.data import subset_build
from pdgen.trajectory import Trajectory
from pdgen.world.rollout import rollout, trajectory_steps

log = logging.getLogger(__name__)

SUBSET = "multiturn"
"""The manifest's ``subset`` for this build."""
AUGMENT_FLAG = 0.5
"""The augmentation probability that ``--augment`` means on the command line (as ``pdgen data plan``)."""


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
        free_prompts: share of trajectories whose prompt is a free scene graph (the module docstring).
    """

    num_trajectories: int = 10_000
    val_size: int = 64
    seed: int = 0
    world: str = "default"
    augment: float = 0.0
    samples_per_shard: int = 500
    free_prompts: float = subset_build.FREE_PROMPTS

    def __post_init__(self) -> None:
        subset_build.check_spec(
            self, {"num_trajectories": 1, "val_size": 0, "samples_per_shard": 1}, ("augment", "free_prompts")
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def multiturn_trajectory(
    spec: MultiTurnSpec, index: int, dead_ends: Counter[str] | None = None
) -> Trajectory:
    """Trajectory number ``index`` of the build ``spec`` (validation ones are numbered from ``VAL_OFFSET``).

    One generator seeded with ``(spec.seed, index)`` draws the tag, the prompt and the rollout's seed. Plans
    whose layout dead-ended before the rollout found one are added to ``dead_ends`` by operation.
    """
    rng = np.random.default_rng([spec.seed, index])
    prompt = subset_build.train_prompt(spec.world, rng, spec.free_prompts)
    seed = int(rng.integers(1 << 62))
    steps = rollout(
        prompt, seed, subset_build.world_config(spec.world), augment=spec.augment, dead_ends=dead_ends
    )
    return Trajectory(prompt, trajectory_steps(steps))


def multiturn_trajectories(
    spec: MultiTurnSpec, split: str = "train", dead_ends: Counter[str] | None = None
) -> Iterator[Trajectory]:
    """Every trajectory of one split of the build, in index order (dead ends added to ``dead_ends``)."""
    indexes = subset_build.split_indexes(split, spec.num_trajectories, spec.val_size)
    return (multiturn_trajectory(spec, index, dead_ends) for index in indexes)


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
    splits, stats, texts = subset_build.write_splits(
        root, spec.samples_per_shard, lambda split: multiturn_trajectories(spec, split, dead_ends), bar
    )
    dead_ends_by_op = dict(sorted(dead_ends.items()))
    head = {"subset": SUBSET}
    return subset_build.finish_build(
        root, head, spec.to_dict(), splits, stats, texts, dead_ends=dead_ends_by_op
    )
