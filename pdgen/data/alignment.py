"""The image-instruction alignment subset: does a draft image follow its step's instruction?

The paper's third subset (5K positive, 10K negative image/instruction pairs) teaches the Inspect and
Refine stages on the *visual* side: the model reads a draft and says why it follows the step's
``<ins>``/``<des>`` (a positive), or what is wrong with it and how to fix it (a negative, with a
``<refine>``). Entry points::

    build_alignment(root, spec: AlignmentSpec, progress=False, judge=None, drafts=None) -> manifest
    alignment_samples(spec, split="train", judge, drafts, outcomes) -> Iterator[AlignmentSample]
    AlignmentSpec(num_samples=15_000, val_size=64, seed=0, world="default", augment=0.0,
                  negatives_per_positive=2, kinds=KINDS, samples_per_shard=500)

A sample is one whole trajectory of a train prompt with one inspection in it, so every control decision
in it is the right one (the same shape as the conflict subset)::

    positive:  Plan_1 Sketch_1 … Plan_k Sketch_k  Inspect(explanation)  Plan_k+1 Sketch_k+1 … (to the answer)
    negative:  Plan_1 Sketch_1 … Plan_k Sketch(draft_k)  Inspect(analysis, <refine>fix</refine>)
               Refine(Plan(fix, des_k), image_k)  Plan_k+1 Sketch_k+1 …                  (to the answer)

How ``pdgen.data.packing`` reads it (no change needed there): the inspected image is followed by an
Inspect, so it gets a ViT copy (``vit_images="inspected"``): the model *reads* the draft. In a negative,
``Plan_k`` and the draft are criticised, so they get no CE and no MSE (unless ``train_criticised``): the
model learns to recognise the mistake, not to make it; the critique, the ``<refine>`` and the corrected
image (a VAE generation target) are trained. A positive never inspects the last image: the model decides
to stop right after the answer, before any inspection, so an inspection there would teach a wrong decision.

Where negatives come from (``DraftSource``): ``Perturbations`` changes the world state of step k in one
controlled way and renders it (``KINDS``: a wrong ``count``, a wrong ``colour``, a broken ``relation``, a
``missing`` or an ``extra`` object). Each perturbation says which violation it made, and is kept only when
the world's exact judge finds exactly that one problem, so a negative's analysis always names the actual
violation. A source of the model's own drafts (the paper's self-sampling) plugs in as another
``DraftSource``; its drafts are labelled by the judge alone.

Who writes the texts (``judge``): by default the world (``WorldJudge``), exact. An ``OpenAIJudge`` may
write them instead; a draft whose verdict is missing (the judge gave up) or disagrees with what the world
knows (a correct image judged wrong, a perturbed one judged right) is not written, only counted in the
manifest's ``outcomes``: no sample is written without a valid verdict.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from pdgen.console import counter
from pdgen.data.subset_build import (
    FREE_PROMPTS,
    INSPECTION_TEXTS,
    VAL_OFFSET,
    Label,
    SampleSkipped,
    check_spec,
    finish_build,
    train_prompt,
    world_config,
    write_labelled_splits,
)
from pdgen.errors import UserError
from pdgen.judges.base import Judge
from pdgen.judges.openai import ChatError
from pdgen.judges.world import WorldJudge
from pdgen.scene.graph import NATURAL_PREDICATE, SceneGraph, SceneObject, join_phrases, number_word
from pdgen.scene.plan import StepGoal
from pdgen.scene.vocabulary import COLORS, OPPOSITE
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory
from pdgen.world.config import WorldConfig
from pdgen.world.layout import Constraint, LayoutError, Placed, WorldState, exchange, place
from pdgen.world.render import render
from pdgen.world.rollout import WorldStep, rollout

log = logging.getLogger(__name__)

_Made = tuple[WorldState, str] | None
"""What a perturbation returns: the changed state and the violation's sentence, or None if it cannot apply."""

SUBSET = "alignment"
"""The manifest's ``subset`` for this build."""
Kind = Literal["count", "colour", "relation", "missing", "extra"]
KINDS: tuple[Kind, ...] = ("count", "colour", "relation", "missing", "extra")
"""The controlled perturbations, the issue's list of ways a draft can miss its instruction."""
_DRAWS_PER_SAMPLE = 200
"""Draws (prompt, step, perturbation) allowed per sample before the build gives up and says why."""


# --------------------------------------------------------------------------------------------------------
# Drafts: where a flawed image of a step comes from


@dataclass(frozen=True)
class Draft:
    """A flawed image for one step.

    Attributes:
        image: the draft.
        kind: how it was made: one of ``KINDS`` for a perturbation, or the source's own name ("model").
        violation: the one problem a perturbation made, worded as the world judge words it ("expected a
            red circle, found none"); None when the source does not know (the model's own drafts).
    """

    image: Image.Image
    kind: str
    violation: str | None = None


class DraftSource(Protocol):
    def draft(self, steps: Sequence[WorldStep], k: int, kind: str, rng: np.random.Generator) -> Draft | None:
        """A flawed draft of step ``k`` of a rollout (``steps[k].goal`` is its instruction), or None.

        ``kind`` is the flaw the build wants next (it balances them); a source that cannot choose its flaws
        (the model's own drafts) ignores it and names its own in ``Draft.kind``.
        """
        ...


class Perturbations:
    """Flawed drafts made by changing the step's world state in one controlled way, then rendering it.

    Every kind touches one instance (the relation's exchange: two) and leaves the rest of the picture
    as it is:

    - ``count``: one more instance of an object (or, for a counted object, one fewer);
    - ``colour``: one instance of a coloured object in another colour that no object of its class has;
    - ``relation``: the subject of a relation moved to a cell where the opposite relation holds, or, when
      no free cell does (always, in a 2x2 grid), the subject and its reference in each other's place;
    - ``missing``: the only instance of an object removed;
    - ``extra``: an instance of a class and colour the scene does not have, in a free cell.

    Args:
        config: the world (layout and rendering).
        kinds: the kinds this source makes.
    """

    def __init__(self, config: WorldConfig, kinds: Sequence[Kind] = KINDS) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise ValueError(f"perturbation kinds {list(kinds)}: unknown {unknown}; kinds are {KINDS}")
        self.config = config
        self.kinds = tuple(kinds)
        self._makers = {
            "count": self._count,
            "colour": self._colour,
            "relation": self._relation,
            "missing": self._missing,
            "extra": self._extra,
        }

    def draft(self, steps: Sequence[WorldStep], k: int, kind: str, rng: np.random.Generator) -> Draft | None:
        """A draft of step ``k`` with a flaw of ``kind``, or None when the step has nothing it can change."""
        if kind not in self.kinds:
            raise ValueError(f"perturbation kind {kind!r} is not one of this source's {self.kinds}")
        step = steps[k]
        try:
            made = self._makers[kind](step.state, step.goal.graph, rng)
        except LayoutError:
            return None  # no free cell for a moved or added instance
        if made is None:
            return None
        state, violation = made
        return Draft(render(state, self.config), kind, violation)

    # ---- the kinds: each returns (perturbed state, the violation's sentence) or None ------------------
    def _count(self, state: WorldState, graph: SceneGraph, rng: np.random.Generator) -> _Made:
        if not graph.objects:
            return None
        o = graph.objects[int(rng.integers(len(graph.objects)))]
        mine = state.find(o.key)
        if o.count >= 2 and rng.random() < 0.5:
            drop = mine[int(rng.integers(len(mine)))]
            kept = [p for i, p in enumerate(state.instances) if i != drop]
            return state.with_instances(kept), f"expected {o.phrase()}, found {number_word(o.count - 1)}"
        twin = state.instances[mine[0]]
        return self._added(state, twin.name, twin.color, o.color, rng), (
            f"expected {o.phrase()}, found {number_word(o.count + 1)}"
        )

    def _colour(self, state: WorldState, graph: SceneGraph, rng: np.random.Generator) -> _Made:
        coloured = [o for o in graph.objects if o.color is not None]
        if not coloured:
            return None
        o = coloured[int(rng.integers(len(coloured)))]
        # A colour no object of this class asks for, so no other object claims the recoloured instance.
        taken = {other.color for other in graph.objects if other.name == o.name}
        free = [c for c in COLORS if c not in taken]
        if not free or any(other.name == o.name and other.color is None for other in graph.objects):
            return None
        colour = free[int(rng.integers(len(free)))]
        mine = state.find(o.key)
        index = mine[int(rng.integers(len(mine)))]
        instances = list(state.instances)
        instances[index] = replace(instances[index], color=colour)
        # The world judge words it as "found a green circle", or "found two and a green circle" for three.
        seen = SceneObject(o.name, 1, colour).phrase()
        if o.count > 1:
            seen = f"{number_word(o.count - 1)} and {seen}"
        return state.with_instances(instances), f"expected {o.phrase()}, found {seen}"

    def _relation(self, state: WorldState, graph: SceneGraph, rng: np.random.Generator) -> _Made:
        if not graph.relations:
            return None
        r = graph.relations[int(rng.integers(len(graph.relations)))]
        subject, reference = graph.objects[r.subject], graph.objects[r.object]
        mine = state.find(subject.key)
        index = mine[int(rng.integers(len(mine)))]
        opposite = OPPOSITE[r.predicate]
        references = state.find(reference.key)
        constraints = [Constraint(opposite, state.instances[i].box, True) for i in references]
        violation = f"expected {subject.definite()} {r.predicate} {reference.definite()}, found it {opposite}"
        try:
            # `place` only offers free cells, so the instance cannot stay where it is.
            box, cell = place(state, constraints, rng, self.config)
        except LayoutError:
            if len(references) != 1:
                raise
            # No free cell on the other side (in a 2x2 grid there never is one): the subject and its
            # reference exchange places, which turns the relation around and changes nothing else.
            return exchange(state, index, references[0]), violation
        instances = list(state.instances)
        instances[index] = replace(instances[index], box=box, cell=cell)
        return state.with_instances(instances), violation

    def _missing(self, state: WorldState, graph: SceneGraph, rng: np.random.Generator) -> _Made:
        single = [o for o in graph.objects if o.count == 1]
        if not single:
            return None
        o = single[int(rng.integers(len(single)))]
        (index,) = state.find(o.key)
        kept = [p for i, p in enumerate(state.instances) if i != index]
        return state.with_instances(kept), f"expected {o.phrase()}, found none"

    def _extra(self, state: WorldState, graph: SceneGraph, rng: np.random.Generator) -> _Made:
        # A class and colour that no object of the scene could claim: its class is not in the scene, or
        # every object of its class asks for another colour.
        options = [
            (name, colour)
            for name in self.config.classes
            for colour in COLORS
            if all(o.name != name or (o.color is not None and o.color != colour) for o in graph.objects)
        ]
        if not options:
            return None
        name, colour = options[int(rng.integers(len(options)))]
        violation = f"found {SceneObject(name, 1, colour).phrase()} that the scene does not have"
        return self._added(state, name, colour, colour, rng), violation

    def _added(
        self, state: WorldState, name: str, colour: str, key_colour: str | None, rng: np.random.Generator
    ) -> WorldState:
        box, cell = place(state, [], rng, self.config)
        return state.with_instances([*state.instances, Placed(name, colour, key_colour, box, cell)])


# --------------------------------------------------------------------------------------------------------
# One sample


@dataclass(frozen=True)
class AlignmentSample:
    """One sample with what it was made from (the shards keep only ``trajectory``).

    Attributes:
        trajectory: what is written.
        label: ``positive`` (the inspected image follows its instruction) or ``negative``.
        kind: how a negative's draft was made (one of ``KINDS``, or the draft source's name).
        violation: for a perturbation, the problem it made, as the world judge words it.
        goal: the inspected step's instruction (its ``graph`` is the scene the image should show).
        image: the inspected image (the draft of a negative).
        inspected: index into ``trajectory.steps`` of the inspected image.
    """

    trajectory: Trajectory
    label: Label
    kind: str | None
    violation: str | None
    goal: StepGoal
    image: Image.Image
    inspected: int


def explain(graph: SceneGraph) -> str:
    """Why an image that passed the check follows its step: what it has, which relations hold."""
    if not graph.objects:
        return "Nothing is drawn yet, as the step asks."
    held = [
        f"{graph.objects[r.subject].definite()} is {NATURAL_PREDICATE[r.predicate]} "
        f"{graph.objects[r.object].definite()}"
        for r in graph.relations
    ]
    text = "It has exactly " + join_phrases([o.phrase() for o in graph.objects])
    return text + "".join(f"; {h}" for h in held) + "; nothing else is drawn."


def alignment_sample(
    prompt: str,
    steps: Sequence[WorldStep],
    k: int,
    draft: Draft | None,
    judge: Judge,
    world_judge: WorldJudge,
) -> AlignmentSample:
    """The sample that inspects step ``k`` of ``steps``: its own image when ``draft`` is None, else the draft.

    Raises:
        SampleSkipped: ``wrong_perturbation`` (the world does not find exactly the perturbation's problem),
            ``not_aligned`` (the step's own image fails the world check), ``judge_failed`` (no valid
            verdict), ``judge_disagrees`` (the verdict contradicts what the world knows).
    """
    goal = steps[k].goal
    image = steps[k].image if draft is None else draft.image
    exact = world_judge.check_image(image, goal)
    if draft is None and not exact.ok:
        raise SampleSkipped("not_aligned", f"step {k} fails its own check: {exact.analysis}")
    if draft is not None and draft.violation is not None and exact.problems != (draft.violation,):
        # The perturbation also broke something else (or less than it meant to): its analysis would not
        # be about the violation it made alone.
        raise SampleSkipped(
            "wrong_perturbation", f"{draft.kind}: made {draft.violation!r}, the world sees {exact.analysis!r}"
        )
    try:
        verdict = exact if judge is world_judge else judge.check_image(image, goal)
    except ChatError as error:
        raise SampleSkipped("judge_failed", str(error)) from error
    if verdict.ok != exact.ok:
        raise SampleSkipped("judge_disagrees", f"the judge says ok={verdict.ok}, the world ok={exact.ok}")
    parts: list[Any] = []
    for step in steps[:k]:
        parts += [Plan(step.goal.ins, step.goal.des), Sketch(step.image)]
    parts += [Plan(goal.ins, goal.des), Sketch(image)]
    inspected = len(parts) - 1
    if verdict.ok:
        parts.append(Inspect(f"{verdict.analysis} {explain(goal.graph)}"))
    else:
        assert verdict.refine is not None, verdict  # a Verdict that is not ok carries its fix
        parts += [
            Inspect(verdict.analysis, verdict.refine),
            Refine(Plan(verdict.refine, goal.des), steps[k].image),
        ]
    for step in steps[k + 1 :]:
        parts += [Plan(step.goal.ins, step.goal.des), Sketch(step.image)]
    label: Label = "positive" if verdict.ok else "negative"
    kind = None if draft is None else draft.kind
    violation = None if draft is None else draft.violation
    return AlignmentSample(Trajectory(prompt, parts), label, kind, violation, goal, image, inspected)


# --------------------------------------------------------------------------------------------------------
# The build


@dataclass(frozen=True)
class AlignmentSpec:
    """What an alignment build contains; equal specs (and judge, draft source) give the same samples.

    Args:
        num_samples: training samples; sample ``i`` is a positive when ``i % (negatives_per_positive + 1)``
            is 0, so 15,000 gives the paper's 5,000 positives and 10,000 negatives; the negatives take the
            ``kinds`` in turn.
        val_size: held-out samples, with the same ratio.
        seed: the data seed; sample ``i`` depends on ``(seed, i)`` only.
        world: the world preset (``WorldConfig.from_name``: default, large, all).
        augment: the planner's probability of edit steps (recolour, replace, remove, move) in the rollouts.
        negatives_per_positive: negatives per positive (2 in the paper).
        kinds: the perturbations negatives are drawn from.
        samples_per_shard: samples per webdataset shard.
        free_prompts: share of samples whose prompt is a free scene graph (``MultiTurnSpec.free_prompts``):
            with ``inspect_last`` off, relation negatives come only from them (a template's relation is
            between its two objects, so its subject is the last step).
        inspect_last: whether a negative may inspect the last step. A positive never can (the module
            docstring), so where negatives can, an inspection of the last image is a negative verdict
            before a word of it is read, and a model that inspects a right last image then invents a flaw;
            without them the model learns to inspect only the steps where either verdict is possible.
    """

    num_samples: int = 15_000
    val_size: int = 64
    seed: int = 0
    world: str = "default"
    augment: float = 0.0
    negatives_per_positive: int = 2
    kinds: tuple[Kind, ...] = KINDS
    samples_per_shard: int = 500
    free_prompts: float = FREE_PROMPTS
    inspect_last: bool = False

    def __post_init__(self) -> None:
        counts = {"num_samples": 1, "val_size": 0, "negatives_per_positive": 0, "samples_per_shard": 1}
        check_spec(self, counts, ("augment", "free_prompts"))
        if "relation" in self.kinds and not (self.inspect_last or self.free_prompts):
            raise UserError(
                "AlignmentSpec: relation negatives need free prompts (free_prompts > 0) or inspect_last: "
                "a template's relation subject is its last step"
            )
        object.__setattr__(self, "kinds", tuple(self.kinds))  # a list from a config file
        Perturbations(world_config(self.world), self.kinds)  # unknown kinds or world presets fail here

    def label(self, number: int) -> Label:
        """The label of sample ``number`` of a split."""
        return "positive" if number % (self.negatives_per_positive + 1) == 0 else "negative"

    def kind(self, number: int) -> Kind:
        """The flaw a negative sample ``number`` asks for: the kinds in turn, so each gets its share."""
        positives_before = (number + self.negatives_per_positive) // (self.negatives_per_positive + 1)
        return self.kinds[(number - positives_before) % len(self.kinds)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kinds": list(self.kinds), "inspection_texts": INSPECTION_TEXTS}


def alignment_samples(
    spec: AlignmentSpec,
    split: str = "train",
    judge: Judge | None = None,
    drafts: DraftSource | None = None,
    outcomes: Counter[str] | None = None,
) -> Iterator[AlignmentSample]:
    """The samples of one split, in order.

    Sample ``number`` tries draws ``(seed, index, attempt)`` until one gives a sample of its label: a
    tag-uniform train prompt (as the multi-turn subset draws them), its rollout, the step to inspect (not
    the background; not the last, unless ``spec.inspect_last`` lets a negative), and for a negative a draft.
    Skipped draws are counted in ``outcomes`` by reason; more than ``_DRAWS_PER_SAMPLE`` for one sample is a
    ValueError naming them.

    Args:
        spec: what to build.
        split: ``train`` or ``val``.
        judge: writes the inspections; default the world's exact judge.
        drafts: where negatives' drafts come from; default ``Perturbations`` of ``spec.kinds``.
        outcomes: a counter to add the skipped draws to.
    """
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}; splits are 'train' and 'val'")
    config = world_config(spec.world)
    world_judge = judge if isinstance(judge, WorldJudge) else WorldJudge(config)
    judge = world_judge if judge is None else judge
    drafts = Perturbations(config, spec.kinds) if drafts is None else drafts
    outcomes = Counter() if outcomes is None else outcomes
    wanted = spec.num_samples if split == "train" else spec.val_size
    start = 0 if split == "train" else VAL_OFFSET
    for number in range(wanted):
        label = spec.label(number)
        skipped: Counter[str] = Counter()
        for attempt in range(_DRAWS_PER_SAMPLE):
            rng = np.random.default_rng([spec.seed, start + number, attempt])
            prompt = train_prompt(spec.world, rng, spec.free_prompts)
            try:
                steps = rollout(prompt, int(rng.integers(1 << 62)), config, augment=spec.augment)
            except ValueError:  # no layout of the prompt fits the grid
                skipped["layout"] += 1
                continue
            # Step 0 is the empty background; a positive needs a step after it (see the module docstring),
            # and so does a negative unless the spec lets it inspect the last step.
            last = len(steps) - (1 if label == "negative" and spec.inspect_last else 2)
            if last < 1:
                skipped["no_step_to_inspect"] += 1
                continue
            # The step to inspect; a negative takes the first, in random order, that its source can flaw.
            candidates = [int(k) for k in 1 + rng.permutation(last)]
            k, draft = candidates[0], None
            if label == "negative":
                for k in candidates:
                    if (draft := drafts.draft(steps, k, spec.kind(number), rng)) is not None:
                        break
                if draft is None:
                    skipped["no_draft"] += 1
                    continue
            try:
                sample = alignment_sample(prompt, steps, k, draft, judge, world_judge)
            except SampleSkipped as skip:
                skipped[skip.outcome] += 1
                log.debug("%s sample %d, draw %d skipped: %s", split, number, attempt, skip)
                continue
            if sample.label != label:
                skipped["draft_judged_ok"] += 1
                continue
            break
        else:
            raise ValueError(
                f"{split} sample {number} ({label}): no sample in {_DRAWS_PER_SAMPLE} draws; "
                f"skipped {dict(skipped)}"
            )
        outcomes.update(skipped)
        yield sample


def build_alignment(
    root: str | os.PathLike[str],
    spec: AlignmentSpec,
    progress: bool = False,
    judge: Judge | None = None,
    drafts: DraftSource | None = None,
) -> dict[str, Any]:
    """Write the alignment subset under ``root`` (shards, tokenizer, manifest last); returns the manifest.

    Layout as ``pdgen.data.multiturn.build_multiturn``: ``train-NNNNNN.tar``, ``val-NNNNNN.tar``,
    ``tokenizer/`` (trained on the build's texts), ``manifest.json`` with the spec, the statistics
    (positives and negatives included), the negatives per kind, the skipped draws per reason, and the
    judge's outcome counts when it keeps them (``OpenAIJudge.counts``).

    Args:
        root: the output directory (created).
        spec: what to build.
        progress: show progress on stderr (`pdgen.console.counter`: a bar, or lines in a log file).
        judge: writes the inspections; default the world's exact judge.
        drafts: where negatives' drafts come from; default ``Perturbations`` of ``spec.kinds``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log.info("building %d + %d alignment samples in %s (%s)", spec.num_samples, spec.val_size, root, spec)
    outcomes: Counter[str] = Counter()
    bar = counter(spec.num_samples + spec.val_size, f"building {SUBSET} in {root}", "samples", progress)
    splits, stats, texts, kinds = write_labelled_splits(
        root,
        spec.samples_per_shard,
        lambda split: alignment_samples(spec, split, judge, drafts, outcomes),
        bar,
    )
    extra: dict[str, Any] = {
        "negative_kinds": dict(sorted(kinds.items())),
        "outcomes": dict(sorted(outcomes.items())),
    }
    if isinstance(counts := getattr(judge, "counts", None), dict):
        extra["judge_counts"] = dict(counts)
    return finish_build(root, {"subset": SUBSET}, spec.to_dict(), splits, stats, texts, **extra)
