"""The process, scored from saved trajectories: plans that build the prompt and stop, and inspections judged
against the world's verdict on the same step."""

import pytest

from pdgen.eval.predictions import TRAJECTORY_DIR
from pdgen.eval.process import score_process, wilson_interval
from pdgen.eval.samples import write_prompt_folder
from pdgen.scene.parser import parse
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory
from pdgen.world.prompts import metadata_row
from pdgen.world.rollout import rollout

PROMPT = "a photo of a circle left of a square"


def steps_of(prompt: str, seed: int = 0) -> list:
    """The world's own plan and images for `prompt`, as trajectory steps."""
    return [part for s in rollout(prompt, seed) for part in (Plan(s.goal.ins, s.goal.des), Sketch(s.image))]


def save(root, index: int, prompt: str, *trajectories: list) -> None:
    """A prediction folder's prompt with one sample per list of steps."""
    row = metadata_row(parse(prompt))
    folder = write_prompt_folder(root, index, row, [steps[-1].image for steps in trajectories])
    for k, steps in enumerate(trajectories):
        Trajectory(prompt, steps).save(folder / TRAJECTORY_DIR / f"{k:04d}")


def test_the_worlds_own_plans_are_right_and_an_early_stop_or_an_extra_object_is_not(tmp_path):
    right = steps_of(PROMPT)
    early = right[:-2]  # the last object never planned
    extra = steps_of(PROMPT) + steps_of("a photo of a circle and a triangle")[-2:]
    save(tmp_path, 0, PROMPT, right, early, extra)
    report = score_process(tmp_path)
    assert report.trajectories == 3 and report.unreadable == 0
    assert (report.planned_right.successes, report.complete.successes) == (1, 1)
    assert report.images_per_trajectory == pytest.approx((3 + 2 + 4) / 3)


def test_planned_right_is_also_given_by_prompt_and_by_tag(tmp_path):
    # Samples of one prompt share their greedy plans: a prompt counts once, and only if every sample is right.
    other = "a photo of a circle and a triangle"
    save(tmp_path, 0, PROMPT, steps_of(PROMPT), steps_of(PROMPT)[:-2])
    save(tmp_path, 1, other, steps_of(other), steps_of(other, seed=1))
    report = score_process(tmp_path)
    assert (report.planned_right.successes, report.planned_right.n) == (3, 4)
    assert (report.prompts_planned_right.successes, report.prompts_planned_right.n) == (1, 2)
    by_tag = report.to_dict()["by_tag"]
    assert list(by_tag) == ["two_object", "position"]  # GenEval's order
    assert by_tag["position"]["planned_right"]["rate"] == 0.5
    assert by_tag["two_object"]["planned_right"]["n"] == 2


def test_a_refine_that_redraws_the_finished_scene_is_still_planned_right_and_its_inspection_judged(tmp_path):
    steps = steps_of(PROMPT)
    wrong_image = steps_of("a photo of a circle right of a square")[-1]  # not what the plan says
    last_plan, right_image = steps[-2], steps[-1]
    redrawn = [*steps[:-1], wrong_image, Inspect("Wrong colour.", "Change the circle to red."),
               Refine(last_plan, right_image.image)]  # fmt: skip
    doubted = [
        *steps,
        Inspect("Wrong colour.", "Change the circle to red."),
        Refine(last_plan, right_image.image),
    ]
    trusted = [
        *steps[:-1],
        wrong_image,
        Inspect("Looks right."),
        Plan(last_plan.ins, last_plan.des),
        right_image,
    ]
    save(tmp_path, 0, PROMPT, redrawn, doubted, trusted)
    report = score_process(tmp_path)
    assert report.planned_right.successes == 3
    # The critique of the wrong image agrees with the world; the one of the right image and the "looks right"
    # of the wrong one do not.
    assert (report.inspections_agree.successes, report.inspections_agree.n) == (1, 3)


def test_a_plan_the_world_cannot_read_counts_as_planned_wrong(tmp_path):
    right = steps_of(PROMPT)
    # "a circle and a circle": the world writes "two circles", so its parser refuses this description.
    unreadable = right[:2] + [Plan("Add a circle.", "The scene shows a circle and a circle."), right[-1]]
    save(tmp_path, 0, PROMPT, right, unreadable)
    report = score_process(tmp_path)
    assert report.unreadable == 1
    assert (report.planned_right.successes, report.planned_right.n) == (1, 2)
    assert (report.complete.successes, report.complete.n) == (1, 2)


def test_a_folder_without_trajectories_has_nothing_to_score(tmp_path):
    write_prompt_folder(tmp_path, 0, metadata_row(parse(PROMPT)), [steps_of(PROMPT)[-1].image])
    report = score_process(tmp_path)
    assert report.trajectories == report.unreadable == 1 and report.planned_right.n == 0


@pytest.mark.parametrize(
    ("k", "n", "low", "high"), [(0, 10, 0.0, 0.278), (10, 10, 0.722, 1.0), (5, 10, 0.237, 0.763)]
)
def test_the_wilson_interval(k, n, low, high):
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-3)
