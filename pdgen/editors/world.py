"""`WorldEditor`: applies a `StepGoal` to a `WorldState` exactly, and renders the result.

What each operation does to the world (nothing else ever moves):
- `background`: clears the world;
- `add`: places one instance of the target in a free cell where every relation of the step's graph that
  involves the target holds against the instances already there (both as subject and as reference);
  an instance whose colour the graph leaves free takes the colour of its siblings, or a random one;
- `recolor` / `replace`: changes the colour / class of one instance in place;
- `remove`: deletes one instance;
- `move`: re-places one instance as `add` would; when no free cell will do (always, in a 2x2 grid: the
  other side of a reference is its own column), it exchanges places with an instance it is related to
  instead, if every relation of the step's graph then holds (the one edit where a second object moves).

An instance the goal names but the world does not contain is a `ValueError` naming it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from pdgen.scene.graph import SceneObject
from pdgen.scene.plan import StepGoal
from pdgen.scene.vocabulary import COLORS
from pdgen.world.config import DEFAULT_WORLD, WorldConfig
from pdgen.world.layout import Constraint, LayoutError, Placed, WorldState, exchange, place, satisfies
from pdgen.world.render import render


class WorldEditor:
    """The shapes world as an `Editor`.

    Args:
        config: the world's geometry and classes.
        seed: seeds the placement and free colour choices (a numpy Generator is also accepted).
    """

    def __init__(self, config: WorldConfig = DEFAULT_WORLD, seed: int | np.random.Generator = 0) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.first_cell: int | None = None if config.shuffles else 0
        """Where a ``canonical`` world reads for a free cell from; None: a random one (`layout.place`)."""

    def edit(self, image: Image.Image | None, before: WorldState, goal: StepGoal) -> Image.Image:
        """Render the world after `goal` (the pixels of `image` are not needed: the state is exact)."""
        return render(self.apply(before, goal), self.config)

    def apply(self, state: WorldState, goal: StepGoal) -> WorldState:
        """The world after `goal`.

        Raises:
            ValueError: for a class outside the world, or an instance the world does not have.
            LayoutError: when no free cell satisfies an added or moved instance's relations.
        """
        if goal.op == "background":
            return WorldState()
        target = goal.target
        assert target is not None, goal
        if goal.op == "add":
            self._check_class(target.name)
            return self._place(state, target, goal, color=self._color_for(state, target))
        index = self._find(state, target)
        instances = list(state.instances)
        if goal.op == "remove":
            del instances[index]
            return state.with_instances(instances)
        if goal.op == "move":
            moved = instances.pop(index)
            try:
                return self._place(state.with_instances(instances), target, goal, color=moved.color)
            except LayoutError:
                return self._exchange(state, index, goal)
        result = goal.result
        assert result is not None, goal
        if goal.op == "recolor":
            instances[index] = replace(instances[index], color=result.color, key_color=result.color)
        else:  # replace
            self._check_class(result.name)
            instances[index] = replace(instances[index], name=result.name)
        return state.with_instances(instances)

    # ---- helpers ------------------------------------------------------------------------------------
    def _check_class(self, name: str) -> None:
        if name not in self.config.classes:
            raise ValueError(f"class {name!r} is not in this world; its classes are {self.config.classes}")

    @staticmethod
    def _find(state: WorldState, target: SceneObject) -> int:
        found = state.find(target.key)
        if not found:
            raise ValueError(
                f"the world has no {target.noun(1)} to edit; it has {[p.key for p in state.instances]}"
            )
        return found[-1]

    def _color_for(self, state: WorldState, target: SceneObject) -> str:
        if target.color is not None:
            return target.color
        siblings = state.find(target.key)
        return state.instances[siblings[0]].color if siblings else str(self.rng.choice(COLORS))

    def _place(self, state: WorldState, target: SceneObject, goal: StepGoal, color: str) -> WorldState:
        constraints = _constraints(state, target.key, goal)
        box, cell = place(state, constraints, self.rng, self.config, self.first_cell)
        return state.with_instances([*state.instances, Placed(target.name, color, target.color, box, cell)])

    def _exchange(self, state: WorldState, index: int, goal: StepGoal) -> WorldState:
        """Instance `index` and one it is related to in each other's place, where that makes every
        relation of `goal.graph` hold for both (with the layout's margin)."""
        threshold = 0.1 + self.config.margin
        key, related = state.instances[index].key, set()
        for r in goal.graph.relations:
            pair = (goal.graph.objects[r.subject].key, goal.graph.objects[r.object].key)
            if key in pair:
                related.update(pair)
        related.discard(key)  # a sibling in its place changes nothing
        for j in self.rng.permutation(len(state.instances)):
            if j == index or state.instances[j].key not in related:
                continue
            swapped = exchange(state, index, int(j))
            if all(_holds(swapped, k, goal, threshold) for k in (index, int(j))):
                return swapped
        raise LayoutError(
            f"no free cell of the {self.config.grid}x{self.config.grid} grid, nor an exchange of places, "
            f"satisfies the relations of {goal.ins!r}"
        )


def _constraints(state: WorldState, key: tuple[str, str | None], goal: StepGoal) -> list[Constraint]:
    """What an instance with `key` must satisfy against the instances in `state`, by `goal.graph`."""
    graph = goal.graph
    constraints = []
    for r in graph.relations:
        subject, reference = graph.objects[r.subject].key, graph.objects[r.object].key
        if subject == key:
            constraints += [
                Constraint(r.predicate, state.instances[i].box, True) for i in state.find(reference)
            ]
        if reference == key:
            constraints += [
                Constraint(r.predicate, state.instances[i].box, False) for i in state.find(subject)
            ]
    return constraints


def _holds(state: WorldState, index: int, goal: StepGoal, threshold: float) -> bool:
    """Whether instance `index` meets its relations of `goal.graph` against the other instances."""
    me = state.instances[index]
    others = state.with_instances([p for i, p in enumerate(state.instances) if i != index])
    return satisfies(me.box, _constraints(others, me.key, goal), threshold)
