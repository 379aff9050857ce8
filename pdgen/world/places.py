"""Places in the plan's words: where each object of a world state is, as the plan text names it.

A plan that says only *what* to draw leaves the generator to guess *where* and, for an object whose colour
the prompt leaves free, which colour: at high noise the best it can do is an average over the possibilities,
and learning to read the plan is slow (``tools/probe_learnability.py`` measures it). The paper's plans say
where things go ("positioned on the right side of the wooden floor"); so do the shapes world's, when
``WorldConfig.name_places`` is on:

    <ins>Add a red circle to the left of the blue square, at the top left.</ins>
    <des>The scene shows a red circle to the left of a blue square on a grey background.
         Places: blue square at the top right, red circle at the top left.</des>

The instruction names the place of the object it adds or moves; the description ends with every object's
colour, class and cell, so that it fixes the whole picture. The planner learns to choose cells (consistent
with the relations, as every training plan is), the generator to draw what is written. ``strip_places``
(``pdgen.scene.describe``, beside the description it strips) gives back the plain description that the
world's parser reads.

Cells are named by row and column: "top"/"bottom" and "left"/"right" on a 2 x 2 grid, with "middle" and
"centre" between them on a 3 x 3 grid.
"""

from __future__ import annotations

from dataclasses import replace

from pdgen.scene.describe import PLACES
from pdgen.scene.plan import StepGoal
from pdgen.world.layout import WorldState

_ROWS = {2: ("top", "bottom"), 3: ("top", "middle", "bottom")}
_COLUMNS = {2: ("left", "right"), 3: ("left", "centre", "right")}


def cell_name(cell: tuple[int, int], grid: int) -> str:
    """ "the top left" for cell (0, 0); "the centre" for the middle of a 3 x 3 grid."""
    if grid not in _ROWS:
        raise ValueError(f"cells are named on 2 x 2 and 3 x 3 grids, not {grid} x {grid}")
    row, column = _ROWS[grid][cell[0]], _COLUMNS[grid][cell[1]]
    return "the centre" if (row, column) == ("middle", "centre") else f"the {row} {column}"


def with_places(goal: StepGoal, before: WorldState, after: WorldState, grid: int) -> StepGoal:
    """``goal`` (which turned ``before`` into ``after``) with the places of ``after`` written into its texts
    (see the module docstring)."""
    if not after.instances:
        return goal
    ins = goal.ins
    if goal.op in ("add", "move") and goal.target is not None:
        # The instance the step placed: its target's, in a cell no instance of that kind had before (a move
        # that exchanges places also moves its reference, which is not what the instruction names).
        # An exchange of places between two instances of one kind leaves no new cell: nothing to name.
        key = goal.target.key
        had = {p.cell for p in before.instances if p.key == key}
        placed = next((p for p in after.instances if p.key == key and p.cell not in had), None)
        if placed is not None:
            where = cell_name(placed.cell, grid)
            ins = f"{ins.removesuffix('.')}{', at' if goal.relations else ' at'} {where}."
    places = ", ".join(f"{p.color} {p.name} at {cell_name(p.cell, grid)}" for p in after.instances)
    return replace(goal, ins=ins, des=f"{goal.des}{PLACES}{places}.")
