"""The step judge: one plan step's scene checked against the whole prompt (the conflict subset's judge).

A step may be incomplete and still right: an object of the prompt that a later step adds is "not drawn
yet", not an error. ``WorldStepJudge.check_step(prompt, step)`` compares a step's scene graph with the
prompt's: objects the prompt does not have, a wrong colour or class, too many instances, a relation the
prompt contradicts. It returns the verdict an Inspect says (``analysis``, ``refine``) and the correcting
``StepGoal`` (recolour, replace, remove or move one instance) that the ``WorldEditor`` applies to the flawed
state, so nothing else in the picture moves. ``pdgen.data.conflict`` writes its samples with it.

Where ``pdgen.judges.base.Judge`` judges an *image* against its step, this judges a step's *text* (its
``<des>``, read back with ``pdgen.scene.describe.read_scene``) against the prompt. As an image's analysis does
(``pdgen.judges.world.image_analysis``), a step's gives its evidence first: "The prompt asks for …; the step
shows …. So the step is consistent with the prompt." or "… So the step conflicts with the prompt: …".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pdgen.judges.base import Verdict
from pdgen.scene.describe import BACKGROUND, describe_scene
from pdgen.scene.graph import NATURAL_PREDICATE, Relation, SceneGraph, SceneObject, join_phrases
from pdgen.scene.plan import StepGoal

# Where a step's verdict starts: the next word is "is" or "conflicts" (`tools/probe_inspector.py` reads it).
STEP_VERDICT = "So the step"


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
                f" {join_phrases(pending).capitalize()} {'is' if one else 'are'} not drawn yet; a later step "
                f"adds {'it' if one else 'them'}, so that is not an error here."
            )
        shown = scene.describe() if scene.objects else "the empty background"
        evidence = f"The prompt asks for {prompt.describe()}; the step shows {shown}."
        if not conflicts:
            text = f"{evidence} {STEP_VERDICT} is consistent with the prompt."
            return StepVerdict(
                Verdict(True, text + (later or " The scene has everything the prompt asks for."))
            )
        first = conflicts[0]
        problems = tuple(c.text for c in conflicts)
        analysis = f"{evidence} {STEP_VERDICT} conflicts with the prompt: {'; '.join(problems)}.{later}"
        refine = first.fix.ins if first.fix is not None else None
        return StepVerdict(Verdict(False, analysis, refine, problems), first.kind, first.fix)

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
