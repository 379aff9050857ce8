"""The training-free baselines of Table 4 drive a random tiny model through valid trajectories."""

from inference_testkit import CRITIQUE, PLAN_1, PLAN_2, REFINE

from pdgen.inference import generate
from pdgen.inference.baselines import (
    ExternalInspector,
    ExternalPlanner,
    WorldPlanner,
    plan_text,
    prompt_goal,
)
from pdgen.inference.control import LoopState
from pdgen.inference.loop import VISION_BLOCK
from pdgen.judges.base import Verdict
from pdgen.trajectory import IM_END, IM_START, VISION_START, Inspect, Plan, Refine, Sketch

PROMPT = "a photo of a red circle left of a blue square"


def as_plan(text: str) -> Plan:
    ins, des = text.removeprefix("<ins>").removesuffix("</des>").split("</ins><des>")
    return Plan(ins, des)


class ScriptedJudge:
    """A judge with fixed verdicts, counting the images it was shown."""

    def __init__(self, *verdicts: Verdict) -> None:
        self.verdicts = list(verdicts)
        self.seen = []

    def check_image(self, image, instruction):
        self.seen.append((image, instruction))
        return self.verdicts[len(self.seen) - 1]


def test_the_world_planner_plans_the_prompt_background_first():
    plans = WorldPlanner().plan(PROMPT, seed=0)
    assert plans[0].ins.startswith("Start with an empty")
    assert len(plans) == 3  # background, then one object per step
    assert "red circle" in plans[-1].des and "blue square" in plans[-1].des
    assert WorldPlanner().plan(PROMPT, seed=0) == plans


def test_an_external_planner_writes_every_plan_and_the_model_only_draws(trunk, tokenizer, packing, fast):
    plans = [as_plan(PLAN_1), as_plan(PLAN_2)]
    result = generate(trunk, tokenizer, PROMPT, fast, 0, packing, controller=ExternalPlanner(plans))
    assert result.stop_reason == "stop_token"
    assert [type(s) for s in result.trajectory.steps] == [Plan, Sketch, Plan, Sketch]
    assert [s for s in result.trajectory.steps if isinstance(s, Plan)] == plans
    assert result.costs.text_tokens == 0  # the model wrote nothing
    assert plan_text(plans[0]) == PLAN_1


def critique_state(images: int, proposed_after: str = "image") -> LoopState:
    return LoopState(PROMPT, "", tuple([None] * images), proposed_after)


def test_an_external_inspector_judges_the_draft_once_and_lets_the_model_refine(
    talkative, tokenizer, packing, fast
):
    judge = ScriptedJudge(Verdict(False, CRITIQUE, REFINE))
    inspector = ExternalInspector(judge, prompt_goal(PROMPT), fast.max_images)
    result = generate(talkative, tokenizer, PROMPT, fast, 0, packing, controller=inspector)
    assert len(judge.seen) == 1 and judge.seen[0][0] is result.images[-2]  # the draft
    assert judge.seen[0][1].graph == prompt_goal(PROMPT).graph
    critique = f"{CRITIQUE}<refine>{REFINE}</refine>"
    assert f"{VISION_BLOCK}{critique}" in result.text
    assert result.text.endswith(f"{VISION_BLOCK}{IM_END}")  # the model's corrected plan, drawn, then a stop
    assert result.stop_reason == "stop_token"


def test_an_approved_draft_is_the_answer(talkative, tokenizer, packing, fast):
    judge = ScriptedJudge(Verdict(True, "The image shows what the prompt asks."))
    inspector = ExternalInspector(judge, prompt_goal(PROMPT), fast.max_images)
    result = generate(talkative, tokenizer, PROMPT, fast, 0, packing, controller=inspector)
    assert len(judge.seen) == 1 and judge.seen[0][0] is result.images[-1]
    assert CRITIQUE not in result.text and result.stop_reason == "stop_token"


def test_the_inspector_waits_for_the_draft_but_not_past_the_cap():
    judge = ScriptedJudge(Verdict(False, CRITIQUE, REFINE), Verdict(False, CRITIQUE, REFINE))
    inspector = ExternalInspector(judge, prompt_goal(PROMPT), max_images=3)
    assert inspector.decide(critique_state(1), (IM_START, IM_END), IM_START) == IM_START  # the model goes on
    assert judge.seen == []
    assert inspector.decide(critique_state(2), (IM_START, IM_END), IM_START) == IM_START  # cap - 1: inspected
    assert len(judge.seen) == 1
    assert inspector.write(critique_state(2)) == f"{CRITIQUE}<refine>{REFINE}</refine>"
    assert inspector.decide(critique_state(2, "text"), (VISION_START, IM_START), VISION_START) == IM_START
    assert inspector.write(critique_state(2)) is None  # the model writes the corrected plan
    assert inspector.decide(critique_state(2, "text"), (VISION_START, IM_START), IM_START) == VISION_START
    assert inspector.decide(critique_state(3), (IM_START, IM_END), IM_START) == IM_END  # one round only


def test_a_refine_trajectory_of_the_inspector_baseline_parses():
    # What the baseline produces when the model writes a proper corrected plan: Plan, Sketch, Inspect, Refine.
    from PIL import Image

    from pdgen.trajectory import Trajectory

    text = (
        f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n{PLAN_1}{VISION_BLOCK}"
        f"{CRITIQUE}<refine>{REFINE}</refine>{PLAN_2}{VISION_BLOCK}{IM_END}"
    )
    images = [Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8))]
    steps = Trajectory.from_text(text, images).steps
    assert [type(s) for s in steps] == [Plan, Sketch, Inspect, Refine]
