"""The instruction-intermediate conflict subset: steps judged against the whole prompt, and their corrections.

The paper's second subset teaches the Inspect and Refine stages on the *text* side: is what a step plans
(``<ins>``/``<des>``) consistent with the prompt? A step may be incomplete and still right: an object of
the prompt that a later step adds is "not drawn yet", not an error. A sample is one trajectory with one
inspection in it::

    positive:  Plan Sketch … Plan_k Sketch_k  Inspect("…is consistent…; the blue square is not drawn yet…")
               Plan_k+1 Sketch_k+1 …                                            (the rest, to the answer)
    negative:  Plan Sketch … Plan_k' Sketch_k'  Inspect("…conflicts with the prompt…", <refine>fix</refine>)
               Refine(Plan(fix, corrected des), corrected image)  Plan_k+1 Sketch_k+1 …  (the rest)

Where the flawed step ``k'`` comes from is what the paper's Table 6 compares:

- *symbolic* (``conflict_sample``, no checkpoint): perturb one object, attribute or relation of the
  prompt's scene graph and plan both graphs with one seed; the first step where the plans differ is the
  flawed step, the steps before it are shared;
- *self-sampled* (``SelfSampler``, the paper's method): a checkpoint trained on the multi-turn subset
  generates a trajectory for a train prompt (``pdgen.inference.generate``); its first step that conflicts
  with the prompt is the flawed step (a negative), or, when none does, one of its steps is a positive.

Either way the same pieces finish the sample, so the two variants differ only in where the errors come
from (the paper's point: self-sampled errors are the model's own):

- ``WorldStepJudge.check_step(prompt, step)`` compares a step's scene graph with the prompt's:
  objects the prompt does not have, a wrong colour or class, too many instances, a relation the prompt
  contradicts. It returns the verdict the Inspect says (``analysis``, ``refine``) and the correcting
  ``StepGoal`` (recolour, replace, remove or move one instance) that the ``WorldEditor`` applies to the
  flawed state, so nothing else in the picture moves;
- ``finish_sample`` renders every state with the world editor, writes the inspection and the Refine,
  and completes the scene with the planner's remaining steps, so every sample ends with the prompt's answer.

Images are the world's renders of the plans, exact as in the multi-turn subset; a self-sampled trajectory
contributes its *texts* (its pixels are not read back: whether an image follows its instruction is the
alignment subset's question). ``build_conflict`` writes a shard set like ``pdgen.data.build`` does, with the
positive and negative counts and, for self-sampling, how many generations ended in each outcome.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from pdgen.console import counter
from pdgen.data.build import (
    TOKENIZER_DIR,
    check_spec,
    train_prompts_by_tag,
    train_world_tokenizer,
    world_config,
)
from pdgen.data.shards import ShardSetWriter, SubsetStats, write_manifest
from pdgen.editors.world import WorldEditor
from pdgen.judges.base import Verdict
from pdgen.scene.graph import NATURAL_PREDICATE, Relation, SceneGraph, SceneObject, article
from pdgen.scene.parser import parse
from pdgen.scene.plan import StepGoal, plan
from pdgen.scene.vocabulary import COLORS, OPPOSITE
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory
from pdgen.world.config import WorldConfig
from pdgen.world.layout import LayoutError, WorldState
from pdgen.world.places import strip_places, with_places
from pdgen.world.render import render

if TYPE_CHECKING:  # the inference package imports torch and the model; only self-sampling needs it
    from pdgen.inference.control import Controller

log = logging.getLogger(__name__)

SUBSET = "conflict"
"""The manifest's ``subset`` for this build."""
BACKGROUND = "grey"
"""The background word the planner writes (``pdgen.scene.plan.plan``'s default)."""
Label = Literal["positive", "negative"]
Perturbation = Literal["object", "attribute", "relation"]
PERTURBATIONS: tuple[Perturbation, ...] = ("object", "attribute", "relation")
_VAL_OFFSET = 1 << 40
"""Validation samples are numbered from here, so they never share a seed with a training one."""


# --------------------------------------------------------------------------------------------------------
# Scene descriptions as the planner writes them


def describe_scene(graph: SceneGraph, background: str = BACKGROUND) -> str:
    """The ``<des>`` text of a scene, in the planner's words ("The scene shows … on a grey background.")."""
    if not graph.objects:
        return f"An empty {background} background."
    return f"The scene shows {graph.describe()} on {article(background)} {background} background."


def read_scene(des: str, background: str = BACKGROUND) -> SceneGraph:
    """Inverse of `describe_scene`: the scene graph a ``<des>`` text describes.

    Raises:
        ValueError: (a ``ParseError`` among them) text that is not a planner-style description.
    """
    des = strip_places(des)  # a world that names places ends its descriptions with them
    if des == describe_scene(SceneGraph(), background):
        return SceneGraph()
    head, tail = "The scene shows ", f" on {article(background)} {background} background."
    if not (des.startswith(head) and des.endswith(tail)):
        raise ValueError(f"not a scene description of the form {head!r}…{tail!r}: {des[:80]!r}")
    return parse(des[len(head) : -len(tail)])


# --------------------------------------------------------------------------------------------------------
# Judging one step against the prompt


@dataclass(frozen=True)
class StepVerdict:
    """A judged step: the verdict the Inspect says and, for a conflict, the step that corrects it.

    Attributes:
        verdict: ``ok``, the analysis (the conflict named, and what is not drawn yet), the ``refine``.
        kind: the first conflict's kind (``object``, ``attribute``, ``relation``, ``count``, ``extra``);
            None when the step is consistent.
        fix: the correcting ``StepGoal`` (its ``ins`` is the refine text, its ``graph`` the corrected scene);
            None when the step is consistent or the conflict has no single-instance fix.
    """

    verdict: Verdict
    kind: str | None = None
    fix: StepGoal | None = None


class StepJudge(Protocol):
    """Judges one step's scene against the whole prompt (the conflict subset's judge)."""

    def check_step(self, prompt: SceneGraph, step: StepGoal) -> StepVerdict: ...


@dataclass(frozen=True)
class _Conflict:
    """One conflict: its kind, its sentence, its fix, and the prompt object the fix draws (``brings``), which
    the analysis then does not call "not drawn yet"."""

    kind: str
    text: str
    fix: StepGoal | None
    brings: int | None = None


class WorldStepJudge:
    """Exact step verdicts from scene graphs: a step conflicts with the prompt when its scene has something
    the prompt rules out; what it lacks is "not drawn yet".

    An object of the step matches a prompt object of its class whose colour is the same or left free.
    Conflicts, in the order they are reported: an object the prompt lacks (``attribute`` when the prompt has
    its class in another colour, ``object`` when the class stands where a prompt object is still missing,
    ``extra`` otherwise), more instances than the prompt asks for (``count``), and a relation between two
    drawn objects that is not the prompt's (``relation``).

    Args:
        background: the background word of the scene descriptions.
    """

    def __init__(self, background: str = BACKGROUND) -> None:
        self.background = background

    def check_step(self, prompt: SceneGraph, step: StepGoal) -> StepVerdict:
        scene = step.graph
        match = _match(scene, prompt)
        conflicts = self._conflicts(scene, prompt, match)
        drawn = Counter({j: scene.objects[i].count for i, j in match.items()})
        if conflicts and conflicts[0].brings is not None:
            drawn[conflicts[0].brings] += 1
        pending = [o.phrase(o.count - drawn[j]) for j, o in enumerate(prompt.objects) if drawn[j] < o.count]
        later = ""
        if pending:
            one = len(pending) == 1 and pending[0].split()[0] in ("a", "an")
            later = (
                f" {_join(pending).capitalize()} {'is' if one else 'are'} not drawn yet; a later step adds "
                f"{'it' if one else 'them'}, so that is not an error here."
            )
        if not conflicts:
            shown = scene.describe() if scene.objects else "the empty background"
            text = f"The step is consistent with the prompt: it shows {shown}, as the prompt allows."
            return StepVerdict(
                Verdict(True, text + (later or " The scene has everything the prompt asks for."))
            )
        first = conflicts[0]
        problems = "; ".join(c.text for c in conflicts)
        analysis = f"The step conflicts with the prompt: {problems}.{later}"
        refine = first.fix.ins if first.fix is not None else None
        return StepVerdict(Verdict(False, analysis, refine), first.kind, first.fix)

    def _conflicts(self, scene: SceneGraph, prompt: SceneGraph, match: dict[int, int]) -> list[_Conflict]:
        conflicts: list[_Conflict] = []
        matched = set(match.values())
        missing = [j for j in range(len(prompt.objects)) if j not in matched]
        for i, o in enumerate(scene.objects):
            if i in match:
                continue
            same_class = [j for j in missing if prompt.objects[j].name == o.name]
            if same_class:
                want = prompt.objects[same_class[0]]
                text = f"it draws {o.phrase()}, but the prompt asks for {want.phrase()}"
                fix = self._swap(scene, i, want, "recolor")
                conflicts.append(_Conflict("attribute", text, fix, same_class[0]))
            elif missing:
                same_color = [j for j in missing if prompt.objects[j].color == o.color]
                j = (same_color or missing)[0]
                want = prompt.objects[j]
                text = f"it draws {o.phrase()} where the prompt asks for {want.phrase()}"
                conflicts.append(_Conflict("object", text, self._swap(scene, i, want, "replace"), j))
            else:
                text = f"it draws {o.phrase()}, which the prompt does not have"
                conflicts.append(_Conflict("extra", text, self._remove(scene, i)))
        for i, j in match.items():
            o, want = scene.objects[i], prompt.objects[j]
            if o.count > want.count:
                text = f"it draws {o.phrase()}, but the prompt asks for {want.phrase()}"
                conflicts.append(_Conflict("count", text, self._remove(scene, i)))
        back = {j: i for i, j in match.items()}
        for r in prompt.relations:
            if r.subject not in back or r.object not in back:
                continue  # one side is not drawn yet: nothing to check
            s, ref = back[r.subject], back[r.object]
            have = [x.predicate for x in scene.relations if (x.subject, x.object) == (s, ref)]
            if r.predicate in have:
                continue
            subject, reference = scene.objects[s], scene.objects[ref]
            where = f"{NATURAL_PREDICATE[have[0]]} {reference.definite()}" if have else "without a relation"
            text = (
                f"it places {subject.definite()} {where}, but the prompt asks for it "
                f"{NATURAL_PREDICATE[r.predicate]} {reference.definite()}"
            )
            conflicts.append(_Conflict("relation", text, self._move(scene, s, ref, r.predicate)))
        return conflicts

    # ---- the correcting steps -------------------------------------------------------------------------
    def _goal(self, op: str, ins: str, graph: SceneGraph, **parts: Any) -> StepGoal:
        return StepGoal(op, ins, describe_scene(graph, self.background), graph, **parts)

    def _swap(self, scene: SceneGraph, i: int, want: SceneObject, op: str) -> StepGoal | None:
        """Recolour or replace the one instance of object ``i`` into the prompt's ``want``."""
        wrong = scene.objects[i]
        if wrong.count != 1:
            return None  # a fix changes one instance; several wrong ones need several steps
        right = SceneObject(want.name, 1, want.color if want.color is not None else wrong.color)
        if op == "recolor" and right.color == wrong.color:
            return None
        if right.key in scene.counts():
            return None  # merging two objects of the graph is not a one-instance edit
        graph = scene.with_object(i, right)
        ins = (
            f"Change the colour of {wrong.definite()} to {right.color}."
            if op == "recolor"
            else f"Replace {wrong.definite()} with {right.phrase(1)}."
        )
        return self._goal(op, ins, graph, target=wrong, result=right)

    def _remove(self, scene: SceneGraph, i: int) -> StepGoal:
        o = scene.objects[i]
        if o.count > 1:
            graph = scene.with_object(i, replace(o, count=o.count - 1))
            return self._goal("remove", f"Remove one {o.noun(1)}.", graph, target=replace(o, count=1))
        keep = [k for k in range(len(scene.objects)) if k != i]
        index = {k: n for n, k in enumerate(keep)}
        relations = tuple(
            Relation(index[r.subject], r.predicate, index[r.object])
            for r in scene.relations
            if r.subject != i and r.object != i
        )
        graph = SceneGraph(tuple(scene.objects[k] for k in keep), relations)
        return self._goal("remove", f"Remove {o.definite()}.", graph, target=o)

    def _move(self, scene: SceneGraph, s: int, ref: int, predicate: str) -> StepGoal | None:
        subject, reference = scene.objects[s], scene.objects[ref]
        if subject.count != 1:
            return None
        relations = [r for r in scene.relations if (r.subject, r.object) != (s, ref)]
        relations.append(Relation(s, predicate, ref))
        graph = SceneGraph(scene.objects, tuple(relations))
        ins = f"Move {subject.definite()} {NATURAL_PREDICATE[predicate]} {reference.definite()}."
        return self._goal(
            "move", ins, graph, target=subject, result=subject, relations=((predicate, reference),)
        )


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _match(scene: SceneGraph, prompt: SceneGraph) -> dict[int, int]:
    """Scene object -> the prompt object it is: same class, same colour or one the prompt leaves free.

    Exact colours claim first, so "a circle" in the prompt does not take the red circle that a "red circle"
    of the prompt is.
    """
    match: dict[int, int] = {}
    for exact in (True, False):
        for i, o in enumerate(scene.objects):
            if i in match:
                continue
            for j, p in enumerate(prompt.objects):
                if j in match.values() or p.name != o.name:
                    continue
                if (p.color == o.color) if exact else p.color is None:
                    match[i] = j
                    break
    return match


# --------------------------------------------------------------------------------------------------------
# Finishing a sample: world states, the inspection, the refine, the rest of the plan


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


class SampleError(ValueError):
    """A sample that cannot be finished; ``outcome`` says why, for the build's counts."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


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
        SampleError: ``no_fix`` (a conflict without a one-instance correction), ``fix_mismatch`` (the fix
            does not reach ``resume``), ``layout`` (no free cell for a placement).
    """
    checked = judge.check_step(prompt_graph, inspected)
    goals = [*before, inspected]
    if not checked.verdict.ok:
        if checked.fix is None:
            raise SampleError(
                "no_fix", f"{checked.kind} conflict without a one-instance fix: {inspected.ins}"
            )
        if not checked.fix.graph.same_as(resume):
            raise SampleError(
                "fix_mismatch", f"the fix {checked.fix.ins!r} does not reach {resume.describe()!r}"
            )
        goals.append(checked.fix)
    elif not inspected.graph.same_as(resume):
        raise SampleError("fix_mismatch", f"{inspected.ins!r} does not reach {resume.describe()!r}")
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
        raise SampleError("layout", str(error)) from error
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
) -> ConflictSample:
    """A symbolic sample for ``prompt``: a negative from a perturbed graph, or a positive at a random step.

    Negatives try the three perturbations in a random order and keep the first that gives a sample. Each
    try that gives none is added to ``skipped`` as ``"<label or perturbation>/<outcome>"``: in a 2x2 grid,
    for one, a subject put on the wrong side of its reference often has no free cell (``relation/layout``).

    Raises:
        SampleError: when no perturbation of the prompt gives a sample (``outcome`` names the last reason).
    """
    judge = judge or WorldStepJudge()
    skipped = Counter() if skipped is None else skipped
    rng = np.random.default_rng(seed)
    graph = parse(prompt)
    plan_seed = int(rng.integers(1 << 62))
    goals = plan(graph, plan_seed, classes=world.classes)
    editor = WorldEditor(world, int(rng.integers(1 << 62)))
    if not negative:
        # The background is no step to inspect; nor the last one: after a positive inspection the order rule
        # wants another Plan, and a positive on the last step would hold nothing the others do not.
        try:
            if len(goals) < 3:
                raise SampleError("too_short", f"{prompt!r} has no step between the background and the last")
            k = int(rng.integers(1, len(goals) - 1))
            return finish_sample(
                prompt, graph, goals[:k], goals[k], goals[k].graph, goals[k + 1 :], judge, editor
            )
        except SampleError as error:
            skipped[f"positive/{error.outcome}"] += 1
            raise
    last: SampleError | None = None
    for kind in [PERTURBATIONS[i] for i in rng.permutation(len(PERTURBATIONS))]:
        try:
            wrong_graph = perturb(graph, kind, rng, world.classes)
        except ValueError as error:
            last = SampleError("no_perturbation", str(error))
        else:
            wrong = plan(wrong_graph, plan_seed, classes=world.classes)
            # The same seed orders both plans alike, so they share every step before the perturbed object.
            k = next(i for i, (a, b) in enumerate(zip(goals, wrong, strict=True)) if a.graph != b.graph)
            try:
                return finish_sample(
                    prompt, graph, goals[:k], wrong[k], goals[k].graph, goals[k + 1 :], judge, editor
                )
            except SampleError as error:
                last = error
        skipped[f"{kind}/{last.outcome}"] += 1
    assert last is not None
    raise last


# --------------------------------------------------------------------------------------------------------
# Self-sampled critiques: a checkpoint's own trajectories


def goal_between(before: SceneGraph, after: SceneGraph, ins: str, des: str) -> StepGoal | None:
    """The world goal that turns scene ``before`` into ``after`` when that is one added instance (or the
    background); None otherwise. This is how a model's plan step is replayed in the world."""
    if not after.objects and not before.objects:
        return StepGoal("background", ins, des, after)
    have, want = before.counts(), after.counts()
    grown = [key for key, n in want.items() if n == have.get(key, 0) + 1]
    same = all(want.get(key, 0) == n for key, n in have.items() if key not in grown)
    if len(grown) != 1 or not same or len(want) - len(have) > 1:
        return None
    if not before.relation_triples() <= after.relation_triples():
        return None
    i = after.index(grown[0])
    target = replace(after.objects[i], count=1)
    relations = tuple((r.predicate, after.objects[r.object]) for r in after.relations if r.subject == i)
    return StepGoal("add", ins, des, after, target, None, relations)


def completion(
    prompt_graph: SceneGraph,
    scene: SceneGraph,
    rng: np.random.Generator,
    classes: Sequence[str],
    attempts: int = 32,
) -> list[StepGoal] | None:
    """The planner's remaining steps after a scene equal to ``scene``, from the first of ``attempts`` plans of
    the prompt that passes through it; None when none does."""
    for _ in range(attempts):
        goals = plan(prompt_graph, rng, classes=classes)
        for i, goal in enumerate(goals):
            if goal.graph.same_as(scene):
                return goals[i + 1 :]
    return None


@dataclass
class SelfSampler:
    """A checkpoint's trajectories turned into conflict samples.

    Args:
        generate_plans: ``(prompt, seed) -> [(ins, des), ...]``: the plan steps of one generation, in order
            (``checkpoint_plans`` makes one from a checkpoint and ``pdgen.inference.generate``).
        world: the shapes world that renders the steps.
        judge: judges each step against the prompt.
        positive_fraction: probability that a generation whose steps are all consistent gives a positive
            (the others are dropped, counted as ``consistent_dropped``, to keep the paper's balance).
    """

    generate_plans: Callable[[str, int], list[tuple[str, str]] | None]
    world: WorldConfig
    judge: StepJudge = field(default_factory=WorldStepJudge)
    positive_fraction: float = 1.0
    outcomes: Counter = field(default_factory=Counter, init=False)
    """Generations by what became of them: ``positive``, ``negative`` or why none was made."""

    def sample(self, prompt: str, seed: int) -> ConflictSample | None:
        """The sample from one generation for ``prompt``, or None (the reason counted in ``outcomes``)."""
        try:
            result = self._sample(prompt, seed)
        except SampleError as error:
            self.outcomes[error.outcome] += 1
            log.debug("no conflict sample from %r (seed %d): %s", prompt, seed, error)
            return None
        self.outcomes[result.label] += 1
        return result

    def _sample(self, prompt: str, seed: int) -> ConflictSample:
        rng = np.random.default_rng(seed)
        graph = parse(prompt)
        steps = self.generate_plans(prompt, int(rng.integers(1 << 62)))
        if not steps:
            raise SampleError("invalid_trajectory", "the generation is not a trajectory with plans")
        goals: list[StepGoal] = []
        scene = SceneGraph()
        for ins, des in steps:
            try:
                after = read_scene(des)
            except ValueError as error:
                raise SampleError("unreadable_plan", f"step {len(goals)}: {error}") from error
            goal = goal_between(scene, after, ins, des) if goals or not after.objects else None
            if goal is None:
                raise SampleError("unrealizable_step", f"step {len(goals)} {ins!r} is not one added instance")
            if not self.judge.check_step(graph, goal).verdict.ok:
                return self._finish(prompt, graph, goals, goal, rng)
            goals.append(goal)
            scene = after
        inspectable = range(1, len(goals) - 1)  # not the background; not the last (see symbolic_sample)
        if not inspectable or rng.random() >= self.positive_fraction:
            raise SampleError("consistent_dropped", "every step is consistent and no positive was drawn")
        k = int(rng.integers(inspectable.start, inspectable.stop))
        return self._finish(prompt, graph, goals[:k], goals[k], rng)

    def _finish(
        self, prompt: str, graph: SceneGraph, before: list[StepGoal], step: StepGoal, rng: np.random.Generator
    ) -> ConflictSample:
        """The sample inspecting ``step`` after ``before``, completed by the planner from the right scene."""
        checked = self.judge.check_step(graph, step)
        reached = step.graph if checked.verdict.ok else (checked.fix.graph if checked.fix else None)
        if reached is None:
            raise SampleError("no_fix", f"{checked.kind} conflict without a one-instance fix: {step.ins}")
        rest = completion(graph, reached, rng, self.world.classes)
        if rest is None:
            raise SampleError("no_completion", f"no plan of the prompt passes through {reached.describe()!r}")
        editor = WorldEditor(self.world, int(rng.integers(1 << 62)))
        return finish_sample(prompt, graph, before, step, reached, rest, self.judge, editor)


def checkpoint_plans(
    checkpoint: str | os.PathLike[str],
    tokenizer: str | os.PathLike[str],
    packing: str = "tiny",
    generation: str = "tiny",
    controller: Callable[[str], Controller] | None = None,
    **overrides: Any,
) -> Callable[[str, int], list[tuple[str, str]] | None]:
    """``(prompt, seed) -> plan steps`` of a checkpoint's generations, for ``SelfSampler``.

    Loads ``ProcessDrivenModule.load_from_checkpoint`` on the CPU (or the GPU when there is one) with its EMA
    average when the checkpoint holds one (the weights ``pdgen predict`` samples with), the tokenizer the
    checkpoint was trained with (a multi-turn build's ``tokenizer/``) and the packing preset it was trained
    with, its geometry set from the trunk as training does (``packing_for_trunk``).

    Args:
        checkpoint: a Lightning checkpoint of ``ProcessDrivenModule`` (stage 1: multi-turn only).
        tokenizer: the tokenizer directory.
        packing: the ``PackingConfig`` preset of training.
        generation: the ``GenerationConfig`` preset; ``overrides`` change its fields (``num_timesteps``).
        controller: ``prompt -> Controller`` for each generation (tests script plans with it); None lets the
            model do everything.
    """
    import torch

    from pdgen.data.packing import PackingConfig
    from pdgen.data.tokenizer import load_tokenizer
    from pdgen.inference import GenerationConfig, generate
    from pdgen.lit.checkpoint_io import check_checkpoint_file
    from pdgen.lit.module import ProcessDrivenModule, packing_for_trunk
    from pdgen.lit.predict import load_ema_weights

    device = "cuda" if torch.cuda.is_available() else "cpu"
    check_checkpoint_file(checkpoint)  # an empty or truncated file is named, not an EOFError
    module = ProcessDrivenModule.load_from_checkpoint(str(checkpoint), map_location=device, weights_only=True)
    module.eval()
    load_ema_weights(module, checkpoint)
    trunk = module.trunk
    words = load_tokenizer(tokenizer)
    layout = packing_for_trunk(PackingConfig.from_name(packing), trunk.config)
    if "image_size" not in overrides:  # the preset's size, within what the trunk draws (32 px, embedded)
        side = min(max(GenerationConfig.from_name(generation).image_size), layout.vae_max_size)
        overrides["image_size"] = (max(side, layout.vae_min_size),) * 2
    config = GenerationConfig.from_name(generation, **overrides)

    def plans(prompt: str, seed: int) -> list[tuple[str, str]] | None:
        scripted = controller(prompt) if controller is not None else None
        result = generate(trunk, words, prompt, config, seed, layout, controller=scripted)
        if result.trajectory is None:
            return None
        steps = []
        for step in result.trajectory.steps:
            if isinstance(step, Plan):
                steps.append((step.ins, step.des))
            elif not isinstance(step, Sketch):
                break  # the model's own inspections: only the plan before the first one is judged
        return steps

    return plans


# --------------------------------------------------------------------------------------------------------
# The build


@dataclass(frozen=True)
class ConflictSpec:
    """What a conflict build contains; equal specs give the same samples.

    Args:
        num_samples: training samples to write.
        val_size: held-out samples.
        seed: the data seed; sample ``i`` depends on ``(seed, i)`` (and, self-sampled, on the checkpoint).
        world: the world preset (default, large, all).
        negative_fraction: share of negatives among symbolic samples (the paper's 8,296 of 15,201, 0.55);
            self-sampled ones are negative as often as the model errs.
        from_ckpt: a stage-1 checkpoint to self-sample from; None builds the symbolic set.
        tokenizer: the tokenizer directory to copy into the build (for self-sampling: the one the checkpoint
            was trained with); None trains the embedded tokenizer on the build's texts.
        packing: the packing preset the checkpoint was trained with (self-sampling).
        num_timesteps: flow steps per image when self-sampling (its images are not kept, only its plans).
        samples_per_shard: samples per webdataset shard.
    """

    num_samples: int = 5000
    val_size: int = 64
    seed: int = 0
    world: str = "default"
    negative_fraction: float = 0.55
    from_ckpt: str | None = None
    tokenizer: str | None = None
    packing: str = "tiny"
    num_timesteps: int = 10
    samples_per_shard: int = 500

    def __post_init__(self) -> None:
        check_spec(self, {"num_samples": 1, "val_size": 0, "samples_per_shard": 1}, ("negative_fraction",))
        if self.from_ckpt is not None and self.tokenizer is None:
            raise ValueError(
                f"ConflictSpec.from_ckpt={self.from_ckpt!r} needs the tokenizer it was trained with "
                "(tokenizer=data/base/tokenizer for the embedded default)"
            )

    @property
    def mode(self) -> str:
        return "symbolic" if self.from_ckpt is None else "self-sampled"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def conflict_samples(
    spec: ConflictSpec,
    split: str = "train",
    sampler: SelfSampler | None = None,
    skipped: Counter[str] | None = None,
) -> Iterator[ConflictSample]:
    """The samples of one split, in order; ``sampler`` self-samples (None: symbolic, as ``spec.mode``).

    Sample ``number`` tries draws ``(seed, number, attempt)`` — a tag-uniform train prompt and a seed — until
    one gives a sample; symbolic samples first draw their label from ``(seed, number)``, so the share of
    negatives is ``negative_fraction`` however often one label fails (a one-object prompt has no step to
    inspect as a positive). The build is thus a function of the spec (and, self-sampled, the checkpoint).
    More than 50 + 20 per sample made failed draws is a ValueError naming the outcomes (a checkpoint that
    never writes a readable plan, say). Symbolic tries that give no sample are added to ``skipped``
    (``symbolic_sample``).
    """
    wanted = spec.num_samples if split == "train" else spec.val_size
    start = 0 if split == "train" else _VAL_OFFSET
    prompts = train_prompts_by_tag(spec.world)  # a tag first, then a prompt of it, as the multi-turn build
    failures: Counter = Counter()
    for number in range(start, start + wanted):
        negative = bool(np.random.default_rng([spec.seed, number]).random() < spec.negative_fraction)
        for attempt in itertools.count():
            rng = np.random.default_rng([spec.seed, number, attempt])
            group = prompts[int(rng.integers(len(prompts)))]
            prompt = group[int(rng.integers(len(group)))]
            seed = int(rng.integers(1 << 62))
            if sampler is not None:
                result = sampler.sample(prompt, seed)
            else:
                try:
                    result = symbolic_sample(
                        prompt, seed, world_config(spec.world), negative, skipped=skipped
                    )
                except SampleError as error:
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
    progress: bool = False,
    sampler: SelfSampler | None = None,
) -> dict[str, Any]:
    """Write the conflict subset under ``root`` (shards, tokenizer, manifest last); returns the manifest.

    Args:
        root: the output directory (created).
        spec: what to build; ``spec.from_ckpt`` set self-samples from that checkpoint.
        progress: show progress on stderr (`pdgen.console.counter`: a bar, or lines in a log file).
        sampler: a ready ``SelfSampler`` (tests script one); None makes one from ``spec.from_ckpt``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if sampler is None and spec.from_ckpt is not None:
        # Room for the longest plan (background + every instance); the images are not kept, so few flow steps.
        plans = checkpoint_plans(
            spec.from_ckpt, spec.tokenizer, spec.packing, num_timesteps=spec.num_timesteps, max_images=12
        )
        sampler = SelfSampler(plans, world_config(spec.world))
    log.info("building %d + %d %s conflict samples in %s", spec.num_samples, spec.val_size, spec.mode, root)
    texts: list[str] = []
    splits: dict[str, Any] = {}
    stats = SubsetStats(positives=0, negatives=0)
    kinds: Counter = Counter()
    skipped: Counter[str] = Counter()
    bar = counter(spec.num_samples + spec.val_size, f"building {SUBSET} in {root}", "samples", progress)
    for split in ("train", "val"):
        with ShardSetWriter(root, split, spec.samples_per_shard) as writer:
            for number, sample in enumerate(conflict_samples(spec, split, sampler, skipped)):
                writer.write(f"{split}{number:09d}", sample.trajectory)
                if split == "train":
                    stats.add(sample.trajectory)
                    if sample.label == "positive":
                        stats.positives += 1
                    else:
                        stats.negatives += 1
                        kinds[sample.kind] += 1
                    texts.append(sample.trajectory.to_text())
                bar.update()
        splits[split] = writer.entry
    bar.close()
    if spec.tokenizer is not None:
        _copy_tree(Path(spec.tokenizer), root / TOKENIZER_DIR)
    else:
        train_world_tokenizer(texts, root / TOKENIZER_DIR)
    manifest: dict[str, Any] = {
        "subset": SUBSET,
        "mode": spec.mode,
        "spec": spec.to_dict(),
        "tokenizer": TOKENIZER_DIR,
        "splits": splits,
        "stats": stats.table(),
        "negative_kinds": dict(sorted(kinds.items())),
    }
    if sampler is not None:
        manifest["outcomes"] = dict(sorted(sampler.outcomes.items()))
    else:
        manifest["skipped"] = dict(sorted(skipped.items()))
    write_manifest(root, manifest)
    log.info("wrote %s: %s", root, stats.table())
    return manifest


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a tokenizer directory into the build, replacing what is there (temporary dir + rename)."""
    if not (source / "tokenizer.json").is_file() and not any(source.glob("*.json")):
        raise ValueError(f"tokenizer {source} is not a tokenizer directory (no JSON files in it)")
    partial = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
