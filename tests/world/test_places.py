"""Places in the plan's words: the cell of what a step adds or moves, every object's place in the
description."""

import pytest

from pdgen.scene.describe import read_scene, strip_places
from pdgen.scene.graph import SceneObject
from pdgen.scene.plan import StepGoal
from pdgen.world.config import WorldConfig
from pdgen.world.layout import Placed, WorldState
from pdgen.world.places import cell_name, with_places
from pdgen.world.rollout import rollout


def placed(name: str, color: str, cell: tuple[int, int]) -> Placed:
    return Placed(name, color, color, (0.0, 0.0, 0.1, 0.1), cell)


@pytest.mark.parametrize(
    ("cell", "grid", "name"),
    [((0, 0), 2, "the top left"), ((1, 1), 2, "the bottom right"), ((1, 1), 3, "the centre"),
     ((2, 0), 3, "the bottom left"), ((0, 1), 3, "the top centre")],
)  # fmt: skip
def test_cells_are_named_by_row_and_column(cell, grid, name):
    assert cell_name(cell, grid) == name


def test_an_added_object_is_placed_in_the_instruction_and_every_object_in_the_description():
    square, circle = placed("square", "blue", (0, 1)), placed("circle", "red", (0, 0))
    goal = StepGoal(
        "add", "Add a red circle to the left of the blue square.", "The scene shows two things.", graph=None,
        target=SceneObject("circle", 1, "red"), relations=(("left of", SceneObject("square", 1, "blue")),),
    )  # fmt: skip
    named = with_places(goal, WorldState((square,)), WorldState((square, circle)), grid=2)
    assert named.ins == "Add a red circle to the left of the blue square, at the top left."
    assert named.des.endswith(" Places: blue square at the top right, red circle at the top left.")
    assert strip_places(named.des) == goal.des


def test_an_exchange_between_two_of_a_kind_names_no_cell():
    before = WorldState((placed("circle", "red", (0, 0)), placed("circle", "red", (0, 1))))
    after = WorldState(tuple(reversed(before.instances)))
    goal = StepGoal(
        "move", "Move the red circle.", "Two red circles.", graph=None, target=SceneObject("circle", 1, "red")
    )
    assert with_places(goal, before, after, grid=2).ins == "Move the red circle."


def test_a_rollout_names_places_and_its_descriptions_still_parse():
    steps = rollout("a photo of a red circle left of a blue square", 3, WorldConfig())
    for step in steps[1:]:
        assert " at the " in step.goal.ins and " Places: " in step.goal.des
        assert read_scene(step.goal.des).same_as(step.goal.graph)
    plain = rollout("a photo of a red circle left of a blue square", 3, WorldConfig(name_places=False))
    for named, bare in zip(steps, plain, strict=True):  # the same layout, only the texts differ
        assert named.goal.ins.startswith(bare.goal.ins.removesuffix("."))
        assert strip_places(named.goal.des) == bare.goal.des
