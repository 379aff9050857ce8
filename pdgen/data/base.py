"""The base stage's data: single shapes-world scenes with a caption, BAGEL's pre-training in miniature.

The paper fine-tunes BAGEL, which was pre-trained at scale on text -> image and image -> text before it
ever saw a process. The embedded trunk has no such past, so its recipe gets one: a *base stage* trained on
caption pairs (``configs/base.yaml``), whose checkpoint the paper's recipe starts from
(``configs/full.yaml``). A sample is a caption and one picture, stored as a trajectory drawn in one pass::

    Trajectory(caption, [Sketch(image)])

and laid out for training by ``pdgen.data.sample_layout.CaptionLayout``: caption -> image (text-to-image) or
image -> caption (the understanding path, which the inspector reads images with).

Captions come in the two voices the process uses, so that what the base model learns to draw from is what the
process later writes before each image:

- with probability ``describe``: the world's *scene description* of one step of a rollout after the
  background (a plan's ``<des>``: "The scene shows a red circle above a blue square on a grey background.
  Places: ..."), and that step's render; with probability ``background`` the empty background instead (a grey
  canvas is learned in a few steps: drawn uniformly, it would be a fifth of the descriptions). Steps are drawn
  uniformly, so scenes of one object are common: what single-object prompts ask;
- otherwise: the GenEval-style *prompt* ("a photo of a red circle above a blue square") and its final scene.

Prompts come from ShapesEval's train split, a tag drawn uniformly per sample (as the multi-turn subset
does), so the test split's (tag, classes, colours) tuples are never seen. Sample ``i`` is a function of
``(spec.seed, i)`` alone.

The build also trains the embedded tokenizer, on its captions *and* on the text of multi-turn trajectories
(plans with their edit steps) and of conflict and alignment samples (their inspections), so that the base
checkpoint and the recipe that starts from it read every text with the same token ids: ``configs/full.yaml``
reads all its subsets with this tokenizer. A word the tokenizer never saw is spelled out byte by byte: an
inspection was three times as many tokens as its words when the tokenizer learned captions and plans alone.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdgen.console import counter
from pdgen.data.alignment import AlignmentSpec, alignment_samples
from pdgen.data.conflict import ConflictSpec, conflict_samples
from pdgen.data.multiturn import AUGMENT_FLAG, MultiTurnSpec, multiturn_trajectories
from pdgen.data.packing_config import PackingGeometry
from pdgen.data.reading import ReaderConfig, ShardDataModule
from pdgen.data.subset_build import (
    INSPECTION_TEXTS,
    check_spec,
    finish_build,
    split_indexes,
    train_prompt,
    world_config,
    write_splits,
)
from pdgen.trajectory import Sketch, Trajectory
from pdgen.world.rollout import rollout

log = logging.getLogger(__name__)

SUBSET = "base"
"""The manifest's ``subset`` for this build."""


@dataclass(frozen=True)
class BaseSpec:
    """What a base-stage build contains; equal specs give byte-identical samples.

    Args:
        num_samples: training caption pairs.
        val_size: held-out pairs (same prompts, other seeds) for validation.
        seed: the data seed; sample ``i`` depends on ``(seed, i)`` only.
        world: the world preset (``WorldConfig.from_name``).
        describe: share of captions that are a step's scene description rather than the prompt.
        background: share of those descriptions that are of the empty background.
        tokenizer_trajectories: multi-turn trajectories (augmented) whose text the tokenizer also learns.
        tokenizer_critiques: conflict samples (symbolic) and alignment samples, as many of each, whose text
            (inspections and refines included) the tokenizer also learns.
        samples_per_shard: pairs per webdataset shard.
    """

    num_samples: int = 20_000
    val_size: int = 64
    seed: int = 0
    world: str = "default"
    describe: float = 0.5
    background: float = 0.05
    tokenizer_trajectories: int = 2_000
    tokenizer_critiques: int = 500
    samples_per_shard: int = 2_000

    def __post_init__(self) -> None:
        counts = {
            "num_samples": 1,
            "val_size": 0,
            "tokenizer_trajectories": 0,
            "tokenizer_critiques": 0,
            "samples_per_shard": 1,
        }
        check_spec(self, counts, ("describe", "background"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "inspection_texts": INSPECTION_TEXTS}


def base_sample(spec: BaseSpec, index: int) -> Trajectory:
    """Caption pair number ``index`` of the build ``spec`` (validation pairs are numbered from 2**40).

    One generator seeded with ``(spec.seed, index)`` draws the tag, the prompt, the rollout's seed, the voice
    of the caption and, for a description, the step.
    """
    rng = np.random.default_rng([spec.seed, index])
    prompt = train_prompt(spec.world, rng)
    steps = rollout(prompt, int(rng.integers(1 << 62)), world_config(spec.world))
    if rng.random() < spec.describe:
        step = steps[0] if rng.random() < spec.background else steps[rng.integers(1, len(steps))]
        return Trajectory(step.goal.des, [Sketch(step.image)])
    return Trajectory(prompt, [Sketch(steps[-1].image)])


def base_samples(spec: BaseSpec, split: str = "train") -> Iterator[Trajectory]:
    """Every caption pair of one split of the build, in index order."""
    indexes = split_indexes(split, spec.num_samples, spec.val_size)
    return (base_sample(spec, index) for index in indexes)


def build_base(root: str | os.PathLike[str], spec: BaseSpec, progress: bool = False) -> dict[str, Any]:
    """Write the base-stage subset under ``root``: shards, tokenizer and, last, the manifest; returns it.

    The same arguments, layout and atomicity as every other subset (``pdgen.data.multiturn.build_multiturn``):
    an interrupted build leaves no manifest and is rebuilt by the next ``prepare_data``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log.info(
        "building %d + %d base-stage caption pairs in %s (%s)", spec.num_samples, spec.val_size, root, spec
    )
    bar = counter(spec.num_samples + spec.val_size, f"building {SUBSET} in {root}", "caption pairs", progress)
    splits, stats, texts = write_splits(
        root, spec.samples_per_shard, lambda split: base_samples(spec, split), bar, text=lambda t: t.prompt
    )
    texts += tokenizer_texts(spec)
    return finish_build(root, {"subset": SUBSET}, spec.to_dict(), splits, stats, texts)


def tokenizer_texts(spec: BaseSpec) -> list[str]:
    """The process's texts the tokenizer learns beside the captions: plans, edits, inspections, refines."""
    texts = []
    if spec.tokenizer_trajectories:
        plans = MultiTurnSpec(spec.tokenizer_trajectories, 0, spec.seed, spec.world, AUGMENT_FLAG)
        texts += [t.to_text() for t in multiturn_trajectories(plans)]
    if spec.tokenizer_critiques:
        n, seed, world = spec.tokenizer_critiques, spec.seed, spec.world
        conflicts = conflict_samples(ConflictSpec(n, 0, seed, world))
        alignments = alignment_samples(AlignmentSpec(n, 0, seed, world))
        texts += [sample.trajectory.to_text() for sample in itertools.chain(conflicts, alignments)]
    return texts


class BaseDataModule(ShardDataModule):
    """The base stage (``configs/base.yaml``): caption pairs of single scenes, BAGEL's pre-training in small.

    Each pair is laid out as text -> image, or with probability ``image_to_text`` as image -> caption
    (``pdgen.data.sample_layout.CaptionLayout``); a text-to-image caption is dropped with probability
    ``prompt_dropout`` (text CFG's unconditional context). Samples are short and alike in length, so a pack
    holds many of them and nearly every token of a text-to-image sample carries the MSE loss.
    ``prepare_data`` builds the shards and the embedded tokenizer under ``root`` when they are missing.

    Args:
        root: the shard set's directory; built there if it holds none.
        build: the caption pairs to build (``BaseSpec``: ``num_samples``, ``describe``, ``background``,
            ``tokenizer_trajectories``, ...); its ``seed`` also seeds the shard order, the shuffle and the
            layout coins.
        image_to_text: share of samples laid out image -> caption.
        tokenizer: a tokenizer directory; None uses (and builds) the one trained with the shards.
        reader: how pairs are read into packs (``pdgen.data.reading.ReaderConfig``); its ``layout`` is
            ``caption`` (the only one for caption pairs), its ``prompt_dropout`` leaves out a text-to-image
            sample's caption.
        geometry: the trunk's image geometry; ``pdgen fit`` links it from ``model.trunk``.
    """

    subset = SUBSET
    builder = staticmethod(build_base)
    default_reader = ReaderConfig(max_tokens=2048, layout="caption")

    def __init__(
        self,
        root: str | os.PathLike[str] = "data/base",
        build: BaseSpec = BaseSpec(),
        image_to_text: float = 0.2,
        tokenizer: str | os.PathLike[str] | None = None,
        reader: ReaderConfig = default_reader,
        geometry: PackingGeometry | None = None,
    ) -> None:
        if reader.layout != "caption":
            raise ValueError(
                f"BaseDataModule reads caption pairs: reader.layout must be 'caption', got {reader.layout!r}"
            )
        self.image_to_text = image_to_text
        super().__init__(root, build, tokenizer, reader, geometry)
