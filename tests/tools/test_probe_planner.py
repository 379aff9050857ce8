"""tools/probe_planner.py: which plans count as copying the prompt.

A fixed answer stands in for the planner (the probe's forward pass is the trunk's, tested elsewhere): what is
tested is the rule, in particular that in a world that builds prompts in a random order a planner may start
with either object of two, and in the default world (one order, the prompt's) only with the first; and that
every object's plan must be right for the prompt to count as planned right.
"""

import pytest
from toolkit import imported_tool

from pdgen.world.config import DEFAULT_WORLD, WorldConfig

TWO = "a photo of a red circle and a blue square"


@pytest.fixture(scope="module")
def probe():
    yield from imported_tool("probe_planner")


def planner_writing(probe, monkeypatch, words: list[str], *later: list[str]) -> None:
    """Makes the probe's planner predict ``words`` for the first object of any trajectory, and ``later`` for
    the objects after it (the true words where ``later`` runs out)."""

    def plan_words(module, packer, trajectory):
        plans = [step.ins for step in trajectory.steps[2:] if hasattr(step, "ins")]
        guesses = [words, *later]
        return [
            (probe.content_words(ins), guesses[k] if k < len(guesses) else probe.content_words(ins))
            for k, ins in enumerate(plans)
        ]

    monkeypatch.setattr(probe, "plan_words", plan_words)


def right(probe, prompt: str, world: WorldConfig = DEFAULT_WORLD) -> bool:
    return probe.first_object_right(probe.scored_plans(None, None, prompt, 0, world))


def every_right(probe, prompt: str) -> bool:
    return probe.every_object_right(probe.scored_plans(None, None, prompt, 0, DEFAULT_WORLD))


def test_the_content_words_of_a_plan_leave_its_place_out(probe):
    assert probe.content_words("Add an orange circle at the top left.") == ["orange", "circle"]
    assert probe.content_words("Add two triangles below the square.") == ["two", "triangles", "square"]


@pytest.mark.parametrize("words", [["red", "circle"], ["blue", "square"]])
def test_either_object_of_two_may_come_first_in_a_random_world(probe, monkeypatch, words):
    planner_writing(probe, monkeypatch, words)
    assert right(probe, TWO, WorldConfig(order="random"))


def test_the_prompts_first_object_comes_first_in_the_default_world(probe, monkeypatch):
    planner_writing(probe, monkeypatch, ["red", "circle"])
    assert right(probe, TWO)
    planner_writing(probe, monkeypatch, ["blue", "square"])
    assert not right(probe, TWO)


@pytest.mark.parametrize("words", [["blue", "circle"], ["green", "square"], ["red"]])
def test_a_class_bound_to_another_colour_or_a_colour_not_asked_is_wrong(probe, monkeypatch, words):
    planner_writing(probe, monkeypatch, words)
    assert not right(probe, TWO)


def test_a_planner_that_recalls_another_class_is_wrong(probe, monkeypatch):
    planner_writing(probe, monkeypatch, ["circle"])
    assert not right(probe, "a photo of a triangle")
    assert right(probe, "a photo of a circle")


def test_a_wrong_second_class_leaves_the_first_object_right_and_the_prompt_planned_wrong(probe, monkeypatch):
    planner_writing(probe, monkeypatch, ["red", "circle"], ["blue", "triangle"])
    assert right(probe, TWO)
    assert not every_right(probe, TWO)
    planner_writing(probe, monkeypatch, ["red", "circle"], ["blue", "square"])
    assert every_right(probe, TWO)


def test_every_plan_of_a_count_is_scored(probe, monkeypatch):
    planner_writing(probe, monkeypatch, ["triangle"], ["triangle"], ["circle"])
    assert not every_right(probe, "a photo of three triangles")
    planner_writing(probe, monkeypatch, ["triangle"], ["triangle"], ["triangle"])
    assert every_right(probe, "a photo of three triangles")
