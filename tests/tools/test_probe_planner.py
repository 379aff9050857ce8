"""tools/probe_planner.py: which first plans count as copying the prompt.

A fixed answer stands in for the planner (the probe's forward pass is the trunk's, tested elsewhere): what is
tested is the rule, in particular that in a world that builds prompts in a random order a planner may start
with either object of two, and in the default world (one order, the prompt's) only with the first.
"""

import pytest
from toolkit import imported_tool

from pdgen.world.config import DEFAULT_WORLD, WorldConfig

TWO = "a photo of a red circle and a blue square"


@pytest.fixture(scope="module")
def probe():
    yield from imported_tool("probe_planner")


def planner_writing(probe, monkeypatch, words: list[str]) -> None:
    """Makes the probe's planner predict ``words`` for the first object of any trajectory."""

    def first_plan_words(module, packer, trajectory):
        return probe.content_words(trajectory.steps[2].ins), words

    monkeypatch.setattr(probe, "first_plan_words", first_plan_words)


def right(probe, prompt: str, world: WorldConfig = DEFAULT_WORLD) -> bool:
    return probe.first_object_right(None, None, prompt, 0, world)


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
