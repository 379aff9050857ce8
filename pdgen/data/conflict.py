"""The instruction-intermediate conflict subset: steps judged against the whole prompt, and their corrections.

The paper's second subset teaches the Inspect and Refine stages on the *text* side: is what a step plans
(``<ins>``/``<des>``) consistent with the prompt? A step may be incomplete and still right: an object of
the prompt that a later step adds is "not drawn yet", not an error. A sample is one trajectory with one
inspection in it::

    positive:  Plan Sketch … Plan_k Sketch_k  Inspect("…is consistent…; the blue square is not drawn yet…")
               Plan_k+1 Sketch_k+1 …                                            (the rest, to the answer)
    negative:  Plan Sketch … Plan_k' Sketch_k'  Inspect("…conflicts with the prompt…", <refine>fix</refine>)
               Refine(Plan(fix, corrected des), corrected image)  Plan_k+1 Sketch_k+1 …  (the rest)

The subset is built in four stages, one module each:

- the step judge (``pdgen.judges.step.WorldStepJudge``) says whether a step conflicts with the prompt, and
  the one-instance step that corrects it; it reads a ``<des>`` with ``pdgen.scene.describe.read_scene``,
  the inverse of the planner's ``describe_scene``;
- *symbolic* flawed steps (``pdgen.data.conflict_sample.symbolic_sample``, no checkpoint: the paper's
  Table 6 ablation) come from a perturbed copy of the prompt's scene graph, and ``finish_sample`` there
  renders, inspects, refines and completes every sample;
- *self-sampled* flawed steps (``pdgen.data.self_sample.SelfSampler``, the paper's method) are the first
  conflicting step of a stage-1 checkpoint's own generation (``checkpoint_plans``);
- the build, here: ``ConflictSpec`` says what a build is and ``ConflictSource`` where its flawed steps come
  from (a checkpoint or none), ``conflict_samples`` draws its samples in order,
  ``build_conflict`` writes a shard set like ``pdgen.data.multiturn`` does, with the positive and negative
  counts and, for self-sampling, how many generations ended in each outcome.

Images are the world's renders of the plans, exact as in the multi-turn subset; a self-sampled trajectory
contributes its *texts*.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdgen.console import counter
from pdgen.data import subset_build
from pdgen.data.conflict_sample import ConflictSample, symbolic_sample
from pdgen.data.self_sample import SelfSampler, checkpoint_plans

log = logging.getLogger(__name__)

SUBSET = "conflict"
"""The manifest's ``subset`` for this build."""
SYMBOLIC = "symbolic"
"""The mode of a build without a checkpoint; ``from_ckpt: symbolic`` asks a ``ConflictDataModule`` for it."""


@dataclass(frozen=True)
class ConflictSpec:
    """What a conflict build contains; equal specs (and sources, ``ConflictSource``) give the same samples.

    Args:
        num_samples: training samples to write.
        val_size: held-out samples.
        seed: the data seed; sample ``i`` depends on ``(seed, i)`` (and, self-sampled, on the checkpoint).
        world: the world preset (default, large, all).
        negative_fraction: share of negatives among symbolic samples (the paper's 8,296 of 15,201, 0.55);
            self-sampled ones are negative as often as the model errs.
        num_timesteps: flow steps per image when self-sampling (its images are not kept, only its plans).
        samples_per_shard: samples per webdataset shard.
        free_prompts: share of samples whose prompt is a free scene graph (``MultiTurnSpec.free_prompts``).
        inspect_last: whether a negative may inspect the last step, which a positive never can
            (``pdgen.data.alignment.AlignmentSpec.inspect_last`` says why that is off by default).
    """

    num_samples: int = 5000
    val_size: int = 64
    seed: int = 0
    world: str = "default"
    negative_fraction: float = 0.55
    num_timesteps: int = 10
    samples_per_shard: int = 500
    free_prompts: float = subset_build.FREE_PROMPTS
    inspect_last: bool = False

    def __post_init__(self) -> None:
        subset_build.check_spec(
            self,
            {"num_samples": 1, "val_size": 0, "samples_per_shard": 1},
            ("negative_fraction", "free_prompts"),
        )

    def to_dict(self, source: ConflictSource | None = None) -> dict[str, Any]:
        """The manifest's ``spec``: this spec's fields and ``source``'s (default: symbolic), one flat dict
        in the order every conflict manifest has had, so that earlier builds are still recognised."""
        fields = asdict(self)
        first = ("num_samples", "val_size", "seed", "world", "negative_fraction")
        head = {name: fields.pop(name) for name in first}
        texts = {"inspection_texts": subset_build.INSPECTION_TEXTS}
        return {**head, **asdict(source or ConflictSource()), **fields, **texts}


@dataclass(frozen=True)
class ConflictSource:
    """Where a conflict build's flawed steps come from: a stage-1 checkpoint's own plans, or none (symbolic).

    Args:
        from_ckpt: a stage-1 checkpoint to self-sample from; None builds the symbolic set.
        tokenizer: the tokenizer directory to copy into the build (for self-sampling: the one the checkpoint
            was trained with); None trains the embedded tokenizer on the build's texts.
        packing: the packing preset the checkpoint was trained with (self-sampling).
    """

    from_ckpt: str | None = None
    tokenizer: str | None = None
    packing: str = "tiny"

    def __post_init__(self) -> None:
        if self.from_ckpt is not None and self.tokenizer is None:
            raise ValueError(
                f"ConflictSource.from_ckpt={self.from_ckpt!r} needs the tokenizer it was trained with "
                "(tokenizer=data/base/tokenizer for the embedded default)"
            )

    @property
    def mode(self) -> str:
        return SYMBOLIC if self.from_ckpt is None else "self-sampled"


def conflict_samples(
    spec: ConflictSpec,
    split: str = "train",
    sampler: SelfSampler | None = None,
    skipped: Counter[str] | None = None,
) -> Iterator[ConflictSample]:
    """The samples of one split, in order; ``sampler`` self-samples (None: the symbolic set).

    Sample ``number`` tries draws ``(seed, number, attempt)`` — a tag-uniform train prompt and a seed — until
    one gives a sample; symbolic samples first draw their label from ``(seed, number)``, so the share of
    negatives is ``negative_fraction`` however often one label fails (a one-object prompt has no step to
    inspect as a positive). The build is thus a function of the spec (and, self-sampled, the checkpoint).
    More than 50 + 20 per sample made failed draws is a ValueError naming the outcomes (a checkpoint that
    never writes a readable plan, say). Symbolic tries that give no sample are added to ``skipped``
    (``symbolic_sample``).
    """
    wanted = spec.num_samples if split == "train" else spec.val_size
    start = 0 if split == "train" else subset_build.VAL_OFFSET
    failures: Counter = Counter()
    world = subset_build.world_config(spec.world)
    for number in range(start, start + wanted):
        negative = bool(np.random.default_rng([spec.seed, number]).random() < spec.negative_fraction)
        for attempt in itertools.count():
            rng = np.random.default_rng([spec.seed, number, attempt])
            # a tag first, then a prompt of it, as every build
            prompt = subset_build.train_prompt(spec.world, rng, spec.free_prompts)
            seed = int(rng.integers(1 << 62))
            if sampler is not None:
                result = sampler.sample(prompt, seed)
            else:
                try:
                    result = symbolic_sample(
                        prompt, seed, world, negative, skipped=skipped, inspect_last=spec.inspect_last
                    )
                except subset_build.SampleSkipped as error:
                    failures[error.outcome] += 1
                    result = None
            if result is not None:
                yield result
                break
            failures["skipped"] += 1
            made = number - start
            if failures["skipped"] > 50 + 20 * made:  # a checkpoint that never plans readably fails early
                outcomes = dict(sampler.outcomes) if sampler is not None else dict(failures)
                raise ValueError(
                    f"{split}: {made} of {wanted} conflict samples after {made + failures['skipped']} draws; "
                    f"outcomes {outcomes}"
                )


def build_conflict(
    root: str | os.PathLike[str],
    spec: ConflictSpec,
    source: ConflictSource | None = None,
    progress: bool = False,
    sampler: SelfSampler | None = None,
) -> dict[str, Any]:
    """Write the conflict subset under ``root`` (shards, tokenizer, manifest last); returns the manifest.

    Args:
        root: the output directory (created).
        spec: what to build.
        source: where flawed steps come from; ``source.from_ckpt`` set self-samples from that checkpoint.
            None is the symbolic set.
        progress: show progress on stderr (`pdgen.console.counter`: a bar, or lines in a log file).
        sampler: a ready ``SelfSampler`` (tests script one); None makes one from ``source.from_ckpt``.
    """
    source = source or ConflictSource()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if sampler is None and source.from_ckpt is not None:
        # Room for the longest plan (background + every instance); the images are not kept, so few flow steps.
        plans = checkpoint_plans(
            source.from_ckpt, source.tokenizer, source.packing, num_timesteps=spec.num_timesteps,
            max_images=12,
        )  # fmt: skip
        world = subset_build.world_config(spec.world)
        sampler = SelfSampler(plans, world, inspect_last=spec.inspect_last)
    log.info("building %d + %d %s conflict samples in %s", spec.num_samples, spec.val_size, source.mode, root)
    skipped: Counter[str] = Counter()
    bar = counter(spec.num_samples + spec.val_size, f"building {SUBSET} in {root}", "samples", progress)
    splits, stats, texts, kinds = subset_build.write_labelled_splits(
        root, spec.samples_per_shard, lambda split: conflict_samples(spec, split, sampler, skipped), bar
    )
    # The checkpoint's tokenizer, copied; without one, finish_build trains one on the texts.
    if source.tokenizer is not None:
        _copy_tree(Path(source.tokenizer), root / subset_build.TOKENIZER_DIR)
    extra: dict[str, Any] = {"negative_kinds": dict(sorted(kinds.items()))}
    if sampler is not None:
        extra["outcomes"] = dict(sorted(sampler.outcomes.items()))
    else:
        extra["skipped"] = dict(sorted(skipped.items()))
    head = {"subset": SUBSET, "mode": source.mode}
    texts_to_learn = None if source.tokenizer is not None else texts
    return subset_build.finish_build(root, head, spec.to_dict(source), splits, stats, texts_to_learn, **extra)


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a tokenizer directory into the build, replacing what is there (temporary dir + rename)."""
    if not (source / "tokenizer.json").is_file() and not any(source.glob("*.json")):
        raise ValueError(f"tokenizer {source} is not a tokenizer directory (no JSON files in it)")
    partial = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
