import numpy as np
import pytest

from pdgen.editors.world import WorldEditor
from pdgen.scene.graph import SceneObject
from pdgen.scene.parser import parse
from pdgen.scene.plan import StepGoal, plan
from pdgen.world.config import WorldConfig
from pdgen.world.layout import LayoutError, WorldState
from pdgen.world.rollout import rollout

LARGE = WorldConfig.from_name("large")  # 64 px, with a star


def test_every_edit_operation_ends_in_the_prompt_state():
    ops = set()
    for seed in range(25):
        steps = rollout("a red circle left of a blue square", seed, augment=1.0)
        ops |= {s.goal.op for s in steps}
        assert sorted(p.key for p in steps[-1].state.instances) == [("circle", "red"), ("square", "blue")]
    assert ops == {"background", "add", "recolor", "replace", "remove", "move"}


def test_recolor_and_replace_keep_the_place():
    editor = WorldEditor(LARGE, seed=0)
    goals = plan(parse("a red circle"), 0)
    state = editor.apply(editor.apply(WorldState(), goals[0]), goals[1])
    red = SceneObject("circle", 1, "red")
    recolor = StepGoal("recolor", "", "", goals[1].graph, red, SceneObject("circle", 1, "blue"))
    replaced = StepGoal(
        "replace", "", "", goals[1].graph, SceneObject("circle", 1, "blue"), SceneObject("star", 1, "blue")
    )
    after = editor.apply(editor.apply(state, recolor), replaced)
    (before,), (now,) = state.instances, after.instances
    assert (now.name, now.color, now.box) == ("star", "blue", before.box)


def test_edit_renders_and_rejects_missing_targets():
    editor = WorldEditor(LARGE, seed=0)
    goals = plan(parse("a green star"), 0)
    image = editor.edit(None, WorldState(), goals[0])
    assert image.size == (64, 64) and np.asarray(image).std() == 0  # empty background
    remove = StepGoal("remove", "Remove the red circle.", "", goals[0].graph, SceneObject("circle", 1, "red"))
    with pytest.raises(ValueError, match="no red circle"):
        editor.apply(WorldState(), remove)
    with pytest.raises(ValueError, match="not in this world"):
        editor.apply(WorldState(), plan(parse("a dog"), 0)[1])


def test_a_move_with_no_free_cell_exchanges_places_with_its_reference():
    # In the 2x2 default world the other side of the square is the square's own column: no cell is free
    # there, so the circle and the square exchange places and nothing else moves. (Random cells: the editor
    # alone has no rollout to retry a reading order that dead-ends.)
    editor = WorldEditor(WorldConfig(order="random"), seed=0)
    wrong = plan(parse("a red circle right of a blue square and a triangle"), 0)
    state = WorldState()
    for goal in wrong:
        state = editor.apply(state, goal)
    right = plan(parse("a red circle left of a blue square and a triangle"), 0)[-1]
    circle, square = SceneObject("circle", 1, "red"), SceneObject("square", 1, "blue")
    move = StepGoal("move", "Move the red circle to the left of the blue square.", right.des, right.graph,
                    circle, circle, (("left of", square),))  # fmt: skip
    moved = editor.apply(state, move)
    where = {p.name: (p.box, p.cell) for p in state.instances}
    now = {p.name: (p.box, p.cell) for p in moved.instances}
    assert (now["circle"], now["square"]) == (where["square"], where["circle"])
    assert now["triangle"] == where["triangle"]
    with pytest.raises(LayoutError, match="nor an exchange"):  # "above" holds neither way round
        editor.apply(state, StepGoal("move", "", "", parse("a red circle above a blue square and a triangle"),
                                     circle, circle, (("above", square),)))  # fmt: skip
