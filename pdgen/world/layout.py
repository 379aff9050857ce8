"""Where objects go: `WorldState` (the placed instances) and `place` (find a spot for one more).

The image is a coarse grid of `grid x grid` cells, one object per cell, each object jittered in size and
position inside its cell. `place` picks a free cell in which every required relation holds under
GenEval's position rule with a stricter threshold (0.1 + `margin`), checked on the boxes themselves, so
the relation survives detection noise. Placing an object never moves the others: an edit that cannot be
placed raises `LayoutError` instead. `exchange` puts two placed objects in each other's place, the one
way to turn a relation around in a 2x2 grid (there, the reference of "left of" is always in the right
column, so no cell is free on its other side).

Boxes are in unit coordinates, (x1, y1, x2, y2) in [0, 1] with y pointing down; `render` scales them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pdgen.eval.geneval import relative_position
from pdgen.world.config import WorldConfig

Box = tuple[float, float, float, float]


class LayoutError(ValueError):
    """No free cell satisfies the relations an object must have."""


@dataclass(frozen=True)
class Placed:
    """One object instance in the world.

    `color` is what is drawn; `key_color` is the colour the scene graph names it by (None when the
    prompt left the colour free and the world chose one).
    """

    name: str
    color: str
    key_color: str | None
    box: Box
    cell: tuple[int, int]

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.name, self.key_color)


@dataclass(frozen=True)
class WorldState:
    """The instances in the world, in the order they were placed."""

    instances: tuple[Placed, ...] = ()

    def find(self, key: tuple[str, str | None]) -> list[int]:
        """Indexes of the instances with this (name, colour) key."""
        return [i for i, p in enumerate(self.instances) if p.key == key]

    def with_instances(self, instances: Sequence[Placed]) -> WorldState:
        return replace(self, instances=tuple(instances))


@dataclass(frozen=True)
class Constraint:
    """The new object must be `predicate` of `box` (`subject=True`) or `box` must be `predicate` of it."""

    predicate: str
    box: Box
    subject: bool


def jittered_box(cell: tuple[int, int], rng: np.random.Generator, config: WorldConfig) -> Box:
    """A square box inside `cell` (row, column): jittered side, jittered centre, never touching the border."""
    step = 1.0 / config.grid
    side = step * config.object_scale * (1 + rng.uniform(-config.size_jitter, config.size_jitter))
    free = (step - side) / 2  # room between the box and the cell border on each side
    cx = (cell[1] + 0.5) * step + rng.uniform(-1, 1) * free * config.position_jitter
    cy = (cell[0] + 0.5) * step + rng.uniform(-1, 1) * free * config.position_jitter
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def satisfies(box: Box, constraints: Sequence[Constraint], threshold: float, exclusive: bool = False) -> bool:
    """Whether `box` meets every constraint under GenEval's rule with this position threshold;
    `exclusive` also asks that the predicate be the only relation (not diagonal)."""
    for c in constraints:
        a, b = (box, c.box) if c.subject else (c.box, box)
        relations = relative_position(a, b, threshold)
        if c.predicate not in relations or (exclusive and len(relations) > 1):
            return False
    return True


def place(
    state: WorldState,
    constraints: Sequence[Constraint],
    rng: np.random.Generator,
    config: WorldConfig,
    first_cell: int | None = None,
) -> tuple[Box, tuple[int, int]]:
    """A box and cell for one more object: a free cell where all constraints hold with margin, preferring
    cells where each relation is the only one (straight left, not diagonally left-above).

    Which free cell: any, at random, or, given ``first_cell``, the first in reading order from that cell
    number on (wrapping around), as a ``canonical`` world places objects (``WorldConfig.order``). Reading
    from the first cell, the reference of "above" lands in the top row, where nothing can go above it; a
    rollout whose layout dead-ends so tries again reading from the next cell, until the reference lands
    where its relations fit (`pdgen.world.rollout.rollout`). So the layout is still a function of the
    prompt and the plan's order.

    Raises:
        LayoutError: if every cell is taken or none satisfies the constraints.
    """
    taken = {p.cell for p in state.instances}
    free = [(r, c) for r in range(config.grid) for c in range(config.grid) if (r, c) not in taken]
    if not free:
        raise LayoutError(
            f"all {config.grid * config.grid} cells of the {config.grid}x{config.grid} grid are taken"
        )
    threshold = 0.1 + config.margin
    if first_cell is None:
        order = rng.permutation(len(free))
    else:
        cells = config.grid * config.grid
        order = sorted(
            range(len(free)), key=lambda i: (free[i][0] * config.grid + free[i][1] - first_cell) % cells
        )
    for exclusive in (True, False) if constraints else (False,):
        for index in order:
            cell = free[index]
            for _ in range(3):  # a few jitters per cell: near the limit of a relation one may pass
                box = jittered_box(cell, rng, config)
                if satisfies(box, constraints, threshold, exclusive):
                    return box, cell
    predicates = ", ".join(sorted({c.predicate for c in constraints}))
    raise LayoutError(
        f"no free cell of the {config.grid}x{config.grid} grid satisfies the {len(constraints)} required "
        f"relation(s) ({predicates}) with margin {config.margin}"
    )


def exchange(state: WorldState, i: int, j: int) -> WorldState:
    """`state` with instances `i` and `j` in each other's place (box and cell), in the same order.

    GenEval's relations are antisymmetric, so what held of `i` against `j` now holds of `j` against `i`,
    with the same margin: "left of" becomes "right of".
    """
    instances = list(state.instances)
    a, b = instances[i], instances[j]
    instances[i], instances[j] = replace(a, box=b.box, cell=b.cell), replace(b, box=a.box, cell=a.cell)
    return state.with_instances(instances)
