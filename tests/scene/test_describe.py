"""Scene descriptions: what the planner writes reads back to the same scene graph."""

import pytest

from pdgen.scene.describe import describe_scene, read_scene
from pdgen.scene.parser import parse
from pdgen.scene.plan import plan
from pdgen.world.config import WorldConfig

WORLD = WorldConfig()


def test_scene_descriptions_read_back_as_the_planner_writes_them():
    for step in plan(parse("a red circle to the left of two blue squares"), 0, classes=WORLD.classes):
        assert describe_scene(step.graph) == step.des
        assert read_scene(step.des).same_as(step.graph)
    with pytest.raises(ValueError, match="not a scene description"):
        read_scene("A sunny beach.")
