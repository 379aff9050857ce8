import numpy as np
import pytest

from pdgen.eval.geneval import relative_position
from pdgen.world.config import WorldConfig
from pdgen.world.layout import Constraint, LayoutError, Placed, WorldState, exchange, jittered_box, place

CONFIG = WorldConfig()
LARGE = WorldConfig.from_name("large")  # a centre cell with a neighbour on every side


def test_boxes_stay_inside_their_cell_with_a_gap():
    rng = np.random.default_rng(0)
    step = 1 / CONFIG.grid
    for _ in range(200):
        cell = (int(rng.integers(CONFIG.grid)), int(rng.integers(CONFIG.grid)))
        x1, y1, x2, y2 = jittered_box(cell, rng, CONFIG)
        assert x2 - x1 == pytest.approx(y2 - y1)
        assert cell[1] * step < x1 < x2 < (cell[1] + 1) * step
        assert cell[0] * step < y1 < y2 < (cell[0] + 1) * step


def test_place_satisfies_the_relation_with_margin_and_prefers_straight_relations():
    anchor = Placed("square", "blue", "blue", jittered_box((1, 1), np.random.default_rng(0), LARGE), (1, 1))
    state = WorldState((anchor,))
    for seed in range(30):
        for predicate in ("left of", "right of", "above", "below"):
            box, cell = place(
                state, [Constraint(predicate, anchor.box, True)], np.random.default_rng(seed), LARGE
            )
            assert cell != (1, 1)
            assert relative_position(box, anchor.box, threshold=0.1 + LARGE.margin) == (predicate,)


def test_place_raises_when_nothing_fits():
    corner = Placed("square", "blue", "blue", jittered_box((0, 0), np.random.default_rng(0), CONFIG), (0, 0))
    with pytest.raises(LayoutError, match="no free cell"):
        place(
            WorldState((corner,)), [Constraint("left of", corner.box, True)], np.random.default_rng(0), CONFIG
        )
    full = WorldState(
        tuple(Placed("circle", "red", None, (0, 0, 0, 0), (r, c)) for r in range(2) for c in range(2))
    )
    with pytest.raises(LayoutError, match="all 4 cells of the 2x2 grid"):
        place(full, [], np.random.default_rng(0), CONFIG)


def test_exchange_turns_a_relation_around():
    # The one way to put the circle on the square's other side in a 2x2 grid, where no cell is free there.
    rng = np.random.default_rng(0)
    circle = Placed("circle", "red", "red", jittered_box((0, 0), rng, CONFIG), (0, 0))
    square = Placed("square", "blue", "blue", jittered_box((0, 1), rng, CONFIG), (0, 1))
    state = WorldState((circle, square))
    threshold = 0.1 + CONFIG.margin
    with pytest.raises(LayoutError):
        place(state, [Constraint("right of", square.box, True)], rng, CONFIG)
    swapped = exchange(state, 0, 1)
    assert [p.name for p in swapped.instances] == ["circle", "square"]  # the order is kept
    assert (swapped.instances[0].cell, swapped.instances[1].cell) == ((0, 1), (0, 0))
    assert relative_position(swapped.instances[0].box, swapped.instances[1].box, threshold) == ("right of",)
