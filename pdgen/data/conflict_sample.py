"""One conflict sample: a trajectory with one inspection of a plan step, finished in the world.

A sample is one trajectory with one inspection in it (``pdgen.data.conflict`` says what the subset is for)::

    positive:  Plan Sketch … Plan_k Sketch_k  Inspect("…is consistent…; the blue square is not drawn yet…")
               Plan_k+1 Sketch_k+1 …                                            (the rest, to the answer)
    negative:  Plan Sketch … Plan_k' Sketch_k'  Inspect("…conflicts with the prompt…", <refine>fix</refine>)
               Refine(Plan(fix, corrected des), corrected image)  Plan_k+1 Sketch_k+1 …  (the rest)

- ``finish_sample`` renders every state with the world editor, writes the inspection (the step judge's,
  ``pdgen.judges.step``) and the Refine, and completes the scene with the planner's remaining steps, so
  every sample ends with the prompt's answer; the self-sampled variant (``pdgen.data.self_sample``) ends
  its samples with it too;
- ``symbolic_sample`` (the paper's Table 6 ablation, no checkpoint): perturb one object, attribute or
  relation of the prompt's scene graph (``perturb``) and plan both graphs with one seed; the first step
  where the plans differ is the flawed step, the steps before it are shared.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from pdgen.data.subset_build import Label, SampleSkipped
from pdgen.editors.world import WorldEditor
from pdgen.judges.step import StepJudge, WorldStepJudge
from pdgen.scene.graph import SceneGraph
from pdgen.scene.parser import parse
from pdgen.scene.plan import StepGoal, plan
from pdgen.scene.vocabulary import COLORS, OPPOSITE
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory
from pdgen.world.config import WorldConfig
from pdgen.world.layout import LayoutError, WorldState
from pdgen.world.places import with_places
from pdgen.world.render import render

Perturbation = Literal["object", "attribute", "relation"]
PERTURBATIONS: tuple[Perturbation, ...] = ("object", "attribute", "relation")


@dataclass(frozen=True)
class ConflictSample:
    """One sample with the world goals behind its images (the shards keep only ``trajectory``).

    Attributes:
        trajectory: what is written.
        label: ``positive`` (the inspected step is consistent) or ``negative``.
        kind: the negative's conflict kind (``object``, ``attribute``, ``relation``, ``count``, ``extra``).
        goals: one world goal per image of the trajectory, in order (the flawed step and the fix included).
        inspected: index into ``goals`` of the inspected step.
        prompt_graph: the prompt's scene graph.
    """

    trajectory: Trajectory
    label: Label
    kind: str | None
    goals: tuple[StepGoal, ...]
    inspected: int
    prompt_graph: SceneGraph


def finish_sample(
    prompt: str,
    prompt_graph: SceneGraph,
    before: Sequence[StepGoal],
    inspected: StepGoal,
    resume: SceneGraph,
    rest: Sequence[StepGoal],
    judge: StepJudge,
    editor: WorldEditor,
) -> ConflictSample:
    """The sample that inspects ``inspected`` after the steps ``before`` and completes with ``rest``.

    ``resume`` is the scene ``rest`` continues from: the inspected step's own scene for a positive, the
    scene its fix must reach for a negative. Every goal is applied to the world in order and rendered.

    Raises:
        SampleSkipped: ``no_fix`` (a conflict without a one-instance correction), ``fix_mismatch`` (the fix
            does not reach ``resume``), ``layout`` (no free cell for a placement).
    """
    checked = judge.check_step(prompt_graph, inspected)
    goals = [*before, inspected]
    if not checked.verdict.ok:
        if checked.fix is None:
            raise SampleSkipped(
                "no_fix", f"{checked.kind} conflict without a one-instance fix: {inspected.ins}"
            )
        if not checked.fix.graph.same_as(resume):
            raise SampleSkipped(
                "fix_mismatch", f"the fix {checked.fix.ins!r} does not reach {resume.describe()!r}"
            )
        goals.append(checked.fix)
    elif not inspected.graph.same_as(resume):
        raise SampleSkipped("fix_mismatch", f"{inspected.ins!r} does not reach {resume.describe()!r}")
    goals += rest
    assert goals[-1].graph.same_as(prompt_graph), (goals[-1].graph, prompt_graph)
    state, images, world = WorldState(), [], editor.config
    try:
        for i, goal in enumerate(goals):
            state, previous = editor.apply(state, goal), state
            images.append(render(state, world))
            if world.name_places:  # the texts say where the placed objects went, as a rollout's do
                goals[i] = with_places(goal, previous, state, world.grid)
    except LayoutError as error:
        raise SampleSkipped("layout", str(error)) from error
    k = len(before)
    steps: list[Any] = []
    for goal, image in zip(goals[: k + 1], images[: k + 1], strict=True):
        steps += [Plan(goal.ins, goal.des), Sketch(image)]
    steps.append(Inspect(checked.verdict.analysis, checked.verdict.refine))
    tail = k + 1
    if not checked.verdict.ok:
        steps.append(Refine(Plan(goals[tail].ins, goals[tail].des), images[tail]))
        tail += 1
    for goal, image in zip(goals[tail:], images[tail:], strict=True):
        steps += [Plan(goal.ins, goal.des), Sketch(image)]
    label: Label = "positive" if checked.verdict.ok else "negative"
    return ConflictSample(Trajectory(prompt, steps), label, checked.kind, tuple(goals), k, prompt_graph)


# --------------------------------------------------------------------------------------------------------
# Symbolic corrections: perturb the prompt's graph


def perturb(
    graph: SceneGraph, kind: Perturbation, rng: np.random.Generator, classes: Sequence[str]
) -> SceneGraph:
    """``graph`` with one object's class or colour, or one relation's predicate, changed.

    Raises:
        ValueError: when the graph has nothing of that kind to change (no coloured object, no relation, or
            no spare class).
    """
    if kind == "relation":
        if not graph.relations:
            raise ValueError(f"{graph.describe()!r} has no relation to perturb")
        i = int(rng.integers(len(graph.relations)))
        relations = list(graph.relations)
        relations[i] = replace(relations[i], predicate=OPPOSITE[relations[i].predicate])
        return replace(graph, relations=tuple(relations))
    names = {o.name for o in graph.objects}
    if kind == "attribute":
        candidates = [i for i, o in enumerate(graph.objects) if o.color is not None]
        if not candidates:
            raise ValueError(f"{graph.describe()!r} has no coloured object to perturb")
        i = candidates[int(rng.integers(len(candidates)))]
        o = graph.objects[i]
        taken = {x.color for x in graph.objects if x.name == o.name}
        return graph.with_object(i, replace(o, color=str(rng.choice([c for c in COLORS if c not in taken]))))
    spare = [c for c in classes if c not in names]
    if not spare:
        raise ValueError(f"{graph.describe()!r} uses every class; none is left to swap in")
    i = int(rng.integers(len(graph.objects)))
    return graph.with_object(i, replace(graph.objects[i], name=str(rng.choice(spare))))


def symbolic_sample(
    prompt: str,
    seed: int,
    world: WorldConfig,
    negative: bool,
    judge: StepJudge | None = None,
    skipped: Counter[str] | None = None,
    inspect_last: bool = False,
) -> ConflictSample:
    """A symbolic sample for ``prompt``: a negative from a perturbed graph, or a positive at a random step.

    A negative whose perturbed step is the last is skipped (``last_step``) unless ``inspect_last``: a
    positive can never inspect the last step (below), so an inspection there would be a verdict given before
    it is read (``pdgen.data.alignment.AlignmentSpec.inspect_last``).

    Negatives try the three perturbations in a random order and keep the first that gives a sample. Each
    try that gives none is added to ``skipped`` as ``"<label or perturbation>/<outcome>"``: in a 2x2 grid,
    for one, a subject put on the wrong side of its reference often has no free cell (``relation/layout``).

    Raises:
        SampleSkipped: when no perturbation of the prompt gives a sample (``outcome`` names the last reason).
    """
    judge = judge or WorldStepJudge()
    skipped = Counter() if skipped is None else skipped
    rng = np.random.default_rng(seed)
    graph = parse(prompt)
    plan_seed = int(rng.integers(1 << 62))
    goals = plan(graph, plan_seed, classes=world.classes, shuffle=world.shuffles)
    editor = WorldEditor(world, int(rng.integers(1 << 62)))
    if not negative:
        # The background is no step to inspect; nor the last one: after a positive inspection the order rule
        # wants another Plan, and a positive on the last step would hold nothing the others do not.
        try:
            if len(goals) < 3:
                raise SampleSkipped(
                    "too_short", f"{prompt!r} has no step between the background and the last"
                )
            k = int(rng.integers(1, len(goals) - 1))
            return finish_sample(
                prompt, graph, goals[:k], goals[k], goals[k].graph, goals[k + 1 :], judge, editor
            )
        except SampleSkipped as error:
            skipped[f"positive/{error.outcome}"] += 1
            raise
    last: SampleSkipped | None = None
    for kind in [PERTURBATIONS[i] for i in rng.permutation(len(PERTURBATIONS))]:
        try:
            wrong_graph = perturb(graph, kind, rng, world.classes)
        except ValueError as error:
            last = SampleSkipped("no_perturbation", str(error))
        else:
            wrong = plan(wrong_graph, plan_seed, classes=world.classes, shuffle=world.shuffles)
            # The same seed orders both plans alike, so they share every step before the perturbed object.
            k = next(i for i, (a, b) in enumerate(zip(goals, wrong, strict=True)) if a.graph != b.graph)
            if k == len(goals) - 1 and not inspect_last:
                last = SampleSkipped("last_step", f"{kind} flaws the last step of {prompt!r}")
            else:
                try:
                    return finish_sample(
                        prompt, graph, goals[:k], wrong[k], goals[k].graph, goals[k + 1 :], judge, editor
                    )
                except SampleSkipped as error:
                    last = error
        skipped[f"{kind}/{last.outcome}"] += 1
    assert last is not None
    raise last
