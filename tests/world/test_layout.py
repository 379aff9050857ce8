import numpy as np
import pytest

from pdgen.eval.geneval import relative_position
from pdgen.world.config import WorldConfig
from pdgen.world.layout import Constraint, LayoutError, Placed, WorldState, jittered_box, place

CONFIG = WorldConfig()


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
    anchor = Placed("square", "blue", "blue", jittered_box((1, 1), np.random.default_rng(0), CONFIG), (1, 1))
    state = WorldState((anchor,))
    for seed in range(30):
        for predicate in ("left of", "right of", "above", "below"):
            box, cell = place(
                state, [Constraint(predicate, anchor.box, True)], np.random.default_rng(seed), CONFIG
            )
            assert cell != (1, 1)
            assert relative_position(box, anchor.box, threshold=0.1 + CONFIG.margin) == (predicate,)


def test_place_raises_when_nothing_fits():
    corner = Placed("square", "blue", "blue", jittered_box((0, 0), np.random.default_rng(0), CONFIG), (0, 0))
    with pytest.raises(LayoutError, match="no free cell"):
        place(
            WorldState((corner,)), [Constraint("left of", corner.box, True)], np.random.default_rng(0), CONFIG
        )
    full = WorldState(
        tuple(Placed("circle", "red", None, (0, 0, 0, 0), (r, c)) for r in range(3) for c in range(3))
    )
    with pytest.raises(LayoutError, match="all 9 cells"):
        place(full, [], np.random.default_rng(0), CONFIG)
