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
            "expected the red circle left of the blue square, found it above",
            "Move the red circle to the left of the blue square.",
        ),
        "a green circle left of a blue square": (
            "expected a red circle, found a green circle",
            "Change the colour of the green circle to red.",
        ),
        "a blue square": ("expected a red circle, found none", "Add a red circle."),
        "a red circle left of a blue square and a red star": (
            "found a red star that the scene does not have",
            "Remove the red star.",
        ),
    }
    for other, (problem, refine) in cases.items():
        verdict = judge.check_image(rollout(other, 1, LARGE)[-1].image, goal)
        assert (verdict.ok, verdict.problems, verdict.refine) == (False, (problem,), refine), other
        assert verdict.analysis.endswith(f"So the image does not follow the step: {problem}."), other


def test_an_image_analysis_says_what_is_asked_and_what_is_shown_before_its_verdict():
    judge = WorldJudge(LARGE)
    goal = rollout(PROMPT, 1, LARGE)[-1].goal
    right = judge.check_image(rollout(PROMPT, 1, LARGE)[-1].image, goal)
    wrong = judge.check_image(rollout("a green circle left of a blue square", 1, LARGE)[-1].image, goal)
    asked = "The step asks for a red circle to the left of a blue square"
    assert (
        right.analysis
        == f"{asked}; the image shows a blue square and a red circle. So the image follows the step."
    )
    assert wrong.analysis == (
        f"{asked}; the image shows a blue square and a green circle. "
        "So the image does not follow the step: expected a red circle, found a green circle."
    )


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
