from collections import Counter

import numpy as np
import pytest

from pdgen.eval.geneval import relative_position
from pdgen.scene.parser import parse
from pdgen.world.config import WorldConfig
from pdgen.world.rollout import rollout, write_rollout

LARGE = WorldConfig.from_name("large")  # 64 px, with a star


def test_rollout_builds_the_prompt_step_by_step_without_moving_objects():
    # no reading order lays this out (both circles must share the right column): random cells do
    steps = rollout("a blue square to the left of two red circles", 0)
    assert [s.goal.op for s in steps] == ["background", "add", "add", "add"]
    assert [len(s.state.instances) for s in steps] == [0, 1, 2, 3]
    for before, after in zip(steps, steps[1:], strict=False):
        assert after.state.instances[: len(before.state.instances)] == before.state.instances
    square = next(p for p in steps[-1].state.instances if p.name == "square")
    for circle in (p for p in steps[-1].state.instances if p.name == "circle"):
        assert "left of" in relative_position(square.box, circle.box)
    assert steps[-1].goal.graph == parse("a blue square to the left of two red circles")


def test_augmented_rollouts_end_in_the_prompt_state():
    for seed in range(20):
        steps = rollout("a red circle above a blue square", seed, augment=1.0)
        final = sorted((p.name, p.color) for p in steps[-1].state.instances)
        assert final == [("circle", "red"), ("square", "blue")]
        red, blue = sorted(steps[-1].state.instances, key=lambda p: p.name)
        assert "above" in relative_position(red.box, blue.box)


def test_the_default_world_builds_a_prompt_one_way_and_a_random_world_many():
    def layouts(prompt, config=None):
        config = config or WorldConfig()
        return {tuple((s.goal.ins, s.state.instances[-1].cell) for s in rollout(prompt, seed, config)[1:])
                for seed in range(8)}  # fmt: skip

    # canonical: the prompt's order, each object in the first free cell (reading order) where it fits
    assert layouts("a photo of a red circle and a blue square") == {
        (("Add a red circle at the top left.", (0, 0)), ("Add a blue square at the top right.", (0, 1)))
    }
    # "above" has no room over the top row: the reference goes to the first cell that leaves some
    assert layouts("a photo of a red circle above a blue square") == {
        (
            ("Add a blue square at the bottom left.", (1, 0)),
            ("Add a red circle above the blue square, at the top left.", (0, 0)),
        )
    }
    assert [cell for _, cell in layouts("a photo of four red circles").pop()] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    assert len(layouts("a photo of a red circle above a blue square", WorldConfig(order="random"))) > 1


def test_uncoloured_instances_share_a_colour():
    steps = rollout("three triangles", 1)
    assert len({p.color for p in steps[-1].state.instances}) == 1


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="dog"):
        rollout("a dog", 0)
    with pytest.raises(ValueError, match="no layout"):
        rollout("five circles left of five squares", 0, attempts=2)


def test_dead_ends_are_replanned_and_counted():
    # Four objects fill the 2x2 grid: a plan whose distractor is still there when the last of them is
    # added dead-ends, and the rollout plans again.
    dead_ends = Counter()
    for seed in range(10):
        steps = rollout("two circles and two squares", seed, augment=1.0, dead_ends=dead_ends)
        assert sorted(p.name for p in steps[-1].state.instances) == ["circle"] * 2 + ["square"] * 2
    assert set(dead_ends) == {"add"} and dead_ends["add"] > 0


def test_write_rollout(tmp_path):
    steps = rollout("a star below a circle", 0, LARGE, augment=0.5)
    paths = write_rollout(steps, tmp_path)
    assert [p.name for p in paths][-1] == "strip.png" and len(paths) == len(steps) + 1
    from PIL import Image

    with Image.open(paths[-1]) as strip:
        assert strip.size[0] > 64 * len(steps) and np.asarray(strip).std() > 0
