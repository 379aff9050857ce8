from dataclasses import replace

from pdgen.judges.base import Verdict
from pdgen.judges.world import WorldJudge
from pdgen.scene.graph import Relation, SceneGraph, SceneObject
from pdgen.scene.parser import parse
from pdgen.scene.plan import plan
from pdgen.world.config import WorldConfig
from pdgen.world.rollout import rollout

PROMPT = "a red circle left of a blue square"
LARGE = WorldConfig.from_name("large")  # the cases need a star and a circle straight above a square


def test_check_image_names_the_violated_rule():
    judge = WorldJudge(LARGE)
    goal = rollout(PROMPT, 1, LARGE)[-1].goal
    assert judge.check_image(rollout(PROMPT, 1, LARGE)[-1].image, goal).ok
    cases = {
        "a red circle above a blue square": (
            "Expected the red circle left of the blue square, found it above.",
            "Move the red circle to the left of the blue square.",
        ),
        "a green circle left of a blue square": (
            "Expected a red circle, found a green circle.",
            "Change the colour of the green circle to red.",
        ),
        "a blue square": ("Expected a red circle, found none.", "Add a red circle."),
        "a red circle left of a blue square and a red star": (
            "Found a red star that the scene does not have.",
            "Remove the red star.",
        ),
    }
    for other, (analysis, refine) in cases.items():
        verdict = judge.check_image(rollout(other, 1, LARGE)[-1].image, goal)
        assert (verdict.ok, verdict.analysis, verdict.refine) == (False, analysis, refine), other


def test_check_plan():
    judge = WorldJudge()
    assert judge.check_plan(PROMPT, plan(parse(PROMPT), 0, augment=1.0)).ok
    wrong = judge.check_plan(PROMPT, plan(parse("a red circle above a blue square"), 0))
    assert not wrong.ok and "expected the red circle left of the blue square" in wrong.analysis
    assert wrong.refine == "Move the red circle to the left of the blue square."
    fewer = judge.check_plan("two red circles", plan(parse("a red circle"), 0))
    assert (
        fewer.refine == "Add a red circle." and "expected two red circles, the plan has one" in fewer.analysis
    )
    # A plan that adds the star below "the circles" while only one of the two exists.
    steps = plan(parse("a star below two circles"), 0)
    early_graph = SceneGraph((SceneObject("circle"), SceneObject("star")), (Relation(1, "below", 0),))
    early = [steps[0], steps[1], replace(steps[3], graph=early_graph), steps[2], steps[3]]
    verdict = judge.check_plan("a star below two circles", early)
    assert verdict == Verdict(
        False,
        "Step 3 places the star below the circle before all two of them exist.",
        "Add the remaining circles first.",
    )
