"""`WorldJudge`: exact verdicts for the shapes world, from rule violations.

`check_plan` compares the plan's final scene graph with the prompt's and checks that no step relates an
object to a reference that is not complete yet. `check_image` detects the image's shapes and compares
them with the step's scene graph: per object, its count and colour; per relation, GenEval's position
rule on every pair; and no object the scene does not have. Each violation becomes one sentence of the
analysis ("expected the red circle left of the blue square, found it above") and the first one also a
corrective instruction ("Move the red circle to the left of the blue square.").

An image's analysis gives its evidence before its verdict (`image_analysis`): what the step asks for, what the
image shows, then "So the image follows the step." or "So the image does not follow the step: <problems>."
The inspector learns to write these, and a verdict that comes after the two lists it compares is one a small
model can learn: it compares what it has just written, instead of deciding before it has read anything
(`docs/judges.md`, "Evidence before the verdict").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from PIL import Image

from pdgen.eval.geneval import Detection, relative_position
from pdgen.judges.base import Verdict
from pdgen.scene.graph import NATURAL_PREDICATE, SceneGraph, SceneObject, join_phrases, number_word
from pdgen.scene.parser import Parser, parse
from pdgen.scene.plan import StepGoal
from pdgen.world.config import DEFAULT_WORLD, WorldConfig
from pdgen.world.detect import WorldDetector

# Where an image's verdict starts: the next word is "follows" or "does" (`tools/probe_inspector.py` reads it).
IMAGE_VERDICT = "So the image"


def _how_many(n: int) -> str:
    return "none" if n == 0 else number_word(n)


def shown(detections: Sequence[Detection]) -> str:
    """What the image shows, as a caption would say it: 'a red circle and two blue squares', or 'nothing'
    (each colour and class once, in the order of their first detection)."""
    counts = Counter((d.name, d.color) for d in detections)
    if not counts:
        return "nothing"
    return join_phrases([SceneObject(name, n, color).phrase() for (name, color), n in counts.items()])


def image_analysis(asked: SceneGraph, detections: Sequence[Detection], problems: Sequence[str]) -> str:
    """The evidence (what the step asks for, what the image shows), then the verdict with its problems."""
    evidence = f"The step asks for {asked.describe()}; the image shows {shown(detections)}."
    if not problems:
        return f"{evidence} {IMAGE_VERDICT} follows the step."
    return f"{evidence} {IMAGE_VERDICT} does not follow the step: {'; '.join(problems)}."


class WorldJudge:
    """The shapes world as a `Judge`.

    Args:
        config: the world (its detector reads the images).
        parser: reads prompts given as text; default the template parser.
    """

    def __init__(self, config: WorldConfig = DEFAULT_WORLD, parser: Parser | None = None) -> None:
        self.detector = WorldDetector(config)
        self.parser = parser

    # ---- plans ------------------------------------------------------------------------------------
    def check_plan(self, prompt: str | SceneGraph, plan: Sequence[StepGoal]) -> Verdict:
        """Does the plan end at the prompt's graph, with every relation added after its reference?"""
        want = parse(prompt, self.parser) if isinstance(prompt, str) else prompt
        if not plan:
            return Verdict(False, "The plan is empty.", f"Add {want.describe()}.")
        for number, step in enumerate(plan, 1):
            for r in step.graph.relations:
                reference = step.graph.objects[r.object]
                final = want.counts().get(reference.key, reference.count)
                if step.op == "add" and reference.count < final:
                    subject = step.graph.objects[r.subject]
                    return Verdict(
                        False,
                        f"Step {number} places {subject.definite()} {NATURAL_PREDICATE[r.predicate]} "
                        f"{reference.definite()} before all {number_word(final)} of them exist.",
                        f"Add the remaining {reference.noun(final)} first.",
                    )
        have = plan[-1].graph
        problems, fix = _compare_graphs(have, want)
        if not problems:
            return Verdict(True, f"The plan builds {want.describe()}, as the prompt asks.")
        return Verdict(False, f"The plan ends with {have.describe()}, but the prompt asks for "
                       f"{want.describe()}: " + "; ".join(problems) + ".", fix)  # fmt: skip

    # ---- images -----------------------------------------------------------------------------------
    def check_image(self, image: Image.Image, instruction: StepGoal) -> Verdict:
        """Does the image show `instruction.graph`: counts, colours, relations, nothing extra?"""
        detections = self.detector.detect(image)
        return judge_detections(detections, instruction.graph)


def judge_detections(detections: Sequence[Detection], graph: SceneGraph) -> Verdict:
    """The verdict for detections against the scene graph they should show."""
    problems: list[str] = []
    fixes: list[str] = []
    claimed: set[int] = set()
    groups: list[list[Detection]] = []
    # Coloured objects claim their detections first, so "a circle" does not take the red circle's.
    order = sorted(range(len(graph.objects)), key=lambda i: graph.objects[i].color is None)
    found_by_object: dict[int, list[int]] = {}
    for i in order:
        o = graph.objects[i]
        found_by_object[i] = [
            j for j, d in enumerate(detections)
            if j not in claimed and d.name == o.name and o.color in (None, d.color)
        ]  # fmt: skip
        claimed.update(found_by_object[i][: o.count])
    for i, o in enumerate(graph.objects):
        found = found_by_object[i]
        groups.append([detections[j] for j in found[: o.count]])
        if len(found) < o.count:
            others = [d for j, d in enumerate(detections) if j not in claimed and d.name == o.name]
            seen = [f"{_how_many(len(found))}"] if found or not others else []
            seen += [SceneObject(d.name, 1, d.color).phrase() for d in others]
            problems.append(f"expected {o.phrase()}, found {' and '.join(seen)}")
            if others:
                fixes.append(f"Change the colour of the {others[0].color} {o.name} to {o.color}.")
                claimed.update(j for j, d in enumerate(detections) if d is others[0])
            else:
                fixes.append(f"Add {o.phrase(o.count - len(found))}.")
        elif len(found) > o.count:
            problems.append(f"expected {o.phrase()}, found {_how_many(len(found))}")
            fixes.append(f"Remove one {o.noun(1)}.")
            claimed.update(found)
    for r in graph.relations:
        subject, reference = graph.objects[r.subject], graph.objects[r.object]
        for a in groups[r.subject]:
            bad = [
                rels for b in groups[r.object] if r.predicate not in (rels := relative_position(a.box, b.box))
            ]
            if bad and groups[r.object]:
                seen = " and ".join(bad[0]) or "touching it"
                problems.append(
                    f"expected {subject.definite()} {r.predicate} {reference.definite()}, found it {seen}"
                )
                fixes.append(
                    f"Move {subject.definite()} {NATURAL_PREDICATE[r.predicate]} {reference.definite()}."
                )
                break
    for j, d in enumerate(detections):
        if j not in claimed:
            thing = SceneObject(d.name, 1, d.color)
            problems.append(f"found {thing.phrase()} that the scene does not have")
            fixes.append(f"Remove the {thing.noun(1)}.")
    # What the image shows, in the order the step names its objects, then what the step does not have.
    named = [j for i in range(len(graph.objects)) for j in found_by_object[i]]
    in_order = [detections[j] for j in dict.fromkeys(named + list(range(len(detections))))]
    analysis = image_analysis(graph, in_order, problems)
    return Verdict(not problems, analysis, fixes[0] if fixes else None, tuple(problems))


def _compare_graphs(have: SceneGraph, want: SceneGraph) -> tuple[list[str], str | None]:
    """Differences between two graphs as sentences, and an instruction fixing the first."""
    problems, fixes = [], []
    have_counts = have.counts()
    for o in want.objects:
        n = have_counts.get(o.key, 0)
        if n != o.count:
            problems.append(f"expected {o.phrase()}, the plan has {_how_many(n)}")
            fixes.append(f"Add {o.phrase(o.count - n)}." if n < o.count else f"Remove one {o.noun(1)}.")
    for o in have.objects:
        if o.key not in want.counts():
            problems.append(f"{o.phrase()} is not in the prompt")
            fixes.append(f"Remove {o.definite()}.")
    for subject, predicate, reference in sorted(want.relation_triples() - have.relation_triples(), key=str):
        s, r = SceneObject(subject[0], 1, subject[1]), SceneObject(reference[0], 1, reference[1])
        problems.append(f"expected {s.definite()} {predicate} {r.definite()}")
        fixes.append(f"Move {s.definite()} {NATURAL_PREDICATE[predicate]} {r.definite()}.")
    return problems, (fixes[0] if fixes else None)
