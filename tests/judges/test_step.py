"""The step judge: a plan step's scene against the whole prompt, its verdict and its one-instance fix."""

import pytest

from pdgen.judges.step import WorldStepJudge
from pdgen.scene.describe import describe_scene
from pdgen.scene.graph import SceneGraph
from pdgen.scene.parser import parse
from pdgen.scene.plan import StepGoal


def goal(text: str, op: str = "add") -> StepGoal:
    """A step whose scene is ``text`` (the judge reads only the graph)."""
    graph = parse(text) if text else SceneGraph()
    return StepGoal(op, f"Step to {text}.", describe_scene(graph), graph)


def test_an_object_not_drawn_yet_is_not_an_error():
    verdict = WorldStepJudge().check_step(parse("a red circle left of a blue square"), goal("a blue square"))
    assert verdict.verdict.ok and verdict.fix is None
    assert "A red circle is not drawn yet" in verdict.verdict.analysis


@pytest.mark.parametrize(
    ("scene", "kind", "named", "refine"),
    [
        ("a green circle", "attribute", "a green circle", "Change the colour of the green circle to red."),
        ("a red star", "object", "a red star", "Replace the red star with a red circle."),
        ("a blue square and a red circle above the blue square", "relation", "above the blue square",
         "Move the red circle to the left of the blue square."),
        ("a red circle to the left of a blue square and a yellow heart", "extra", "a yellow heart",
         "Remove the yellow heart."),
    ],
)  # fmt: skip
def test_each_conflict_is_named_and_its_fix_reaches_a_consistent_scene(scene, kind, named, refine):
    prompt = parse("a red circle to the left of a blue square")
    judge = WorldStepJudge()
    checked = judge.check_step(prompt, goal(scene))
    assert not checked.verdict.ok and checked.kind == kind
    assert named in checked.verdict.analysis and "conflicts with the prompt" in checked.verdict.analysis
    assert checked.verdict.refine == refine
    assert checked.fix is not None and checked.fix.ins == checked.verdict.refine
    assert judge.check_step(prompt, checked.fix).verdict.ok  # the corrected scene is consistent


def test_too_many_instances_is_a_count_conflict():
    checked = WorldStepJudge().check_step(parse("two circles"), goal("three circles"))
    assert checked.kind == "count" and checked.verdict.refine == "Remove one circle."
    assert checked.fix.graph.counts() == {("circle", None): 2}
