"""`plan(graph, rng)`: a scene graph as an ordered list of `StepGoal`s, the Plan stage's ground truth.

Subgraph expansion, as the paper builds its multi-turn data: a background step first, then one object
instance per step; anchors (objects that are nobody's subject) and the objects related to them come in a
random order (or, with ``shuffle=False``, the prompt's) in which an object is added only after every
instance of its reference exists. Each step carries the incremental instruction (`ins`, the `<ins>` text)
and the description of the whole scene after it (`des`, the `<des>` text, written by
`pdgen.scene.describe.describe_scene`). Without augmentation every step's graph is a subgraph of the next and
the last equals the prompt's graph (indexes included).

`augment` rewrites some steps into richer edit operations that still end at the prompt's graph:
- `recolor`  (modify attribute): the object is first added in a wrong colour, later recoloured;
- `replace`  (swap): the object is first added as a wrong class, later replaced in place;
- `remove`   (remove a distractor): an extra object is added, later removed;
- `move`: a related object is first put on the opposite side of its reference, later moved.
The correcting step comes at a random later point. Wrong classes and distractors are drawn from
`classes` (default: the shapes if the graph is all shapes, else GenEval's classes) minus the graph's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pdgen.scene.describe import BACKGROUND, describe_scene
from pdgen.scene.graph import NATURAL_PREDICATE, Relation, SceneGraph, SceneObject
from pdgen.scene.vocabulary import COLORS, GENEVAL_CLASSES, OPPOSITE, SHAPE_CLASSES

OPS = ("background", "add", "recolor", "replace", "remove", "move")


@dataclass(frozen=True)
class StepGoal:
    """One step of a plan.

    `target` is the single instance the step acts on, named as the scene knows it *before* the step
    (count 1); `result` is what a recolour or replace turns it into; `relations` are the
    (predicate, reference) pairs an added or moved instance must satisfy, references as named before the
    step. `graph` is the whole scene after the step.
    """

    op: str
    ins: str
    des: str
    graph: SceneGraph
    target: SceneObject | None = None
    result: SceneObject | None = None
    relations: tuple[tuple[str, SceneObject], ...] = ()

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"StepGoal op {self.op!r} is not one of {OPS}")


class _Scene:
    """The plan's mutable scene: one slot per prompt object (same index), distractors after."""

    def __init__(self, graph: SceneGraph) -> None:
        self.names = [o.name for o in graph.objects]
        self.colors = [o.color for o in graph.objects]
        self.counts = [0] * len(graph.objects)
        self.relations = [[r.subject, r.predicate, r.object] for r in graph.relations]

    def obj(self, slot: int, count: int | None = None) -> SceneObject:
        return SceneObject(self.names[slot], self.counts[slot] if count is None else count, self.colors[slot])

    def graph(self) -> SceneGraph:
        present = [i for i, n in enumerate(self.counts) if n > 0]
        index = {slot: i for i, slot in enumerate(present)}
        relations = tuple(
            Relation(index[s], p, index[o]) for s, p, o in self.relations if s in index and o in index
        )
        return SceneGraph(tuple(self.obj(i) for i in present), relations)

    def relations_of(self, slot: int) -> tuple[tuple[str, SceneObject], ...]:
        """(predicate, reference) for the slot's relations whose reference is already present."""
        return tuple((p, self.obj(o)) for s, p, o in self.relations if s == slot and self.counts[o] > 0)


def plan(
    graph: SceneGraph,
    rng: np.random.Generator | int,
    augment: float = 0.0,
    classes: Sequence[str] | None = None,
    background: str = BACKGROUND,
    shuffle: bool = True,
) -> list[StepGoal]:
    """Order the graph's construction into steps (see the module docstring).

    Args:
        graph: the prompt's scene graph.
        rng: a numpy Generator, or a seed for one.
        augment: probability that an eligible step is rewritten into an edit operation (0 = none).
        classes: pool for wrong classes and distractors.
        background: the background's colour word, used in the texts.
        shuffle: add the objects that are ready (their references placed) in a random order; False adds
            them in the prompt's order, so a prompt fixes its plan.
    """
    rng = np.random.default_rng(rng)
    if not 0.0 <= augment <= 1.0:
        raise ValueError(f"augment must be a probability in [0, 1], got {augment}")
    if classes is None:
        classes = SHAPE_CLASSES if all(o.name in SHAPE_CLASSES for o in graph.objects) else GENEVAL_CLASSES
    spare = [c for c in classes if c not in {o.name for o in graph.objects}]
    referenced = {r.object for r in graph.relations}

    # 1. The order of additions: a random topological order, all instances of an object together.
    remaining = {i: o.count for i, o in enumerate(graph.objects)}
    actions: list[tuple] = []
    while remaining:
        ready = [
            i for i in remaining if all(r.object not in remaining for r in graph.relations if r.subject == i)
        ]
        slot = ready[rng.integers(len(ready))] if shuffle else ready[0]
        actions.extend(("add", slot) for _ in range(remaining.pop(slot)))

    # 2. Augmentation: rewrite some first additions; each fix goes to a random later position.
    scene = _Scene(graph)
    wrong: dict[int, tuple[str, str | None]] = {}  # slot -> what it is before its fix: (op, value)
    if augment > 0:
        for position in range(len(actions) - 1, -1, -1):
            _, slot = actions[position]
            o = graph.objects[slot]
            if o.count != 1 or rng.random() >= augment:
                continue
            ops = []
            if o.color is not None:
                ops.append("recolor")
            if spare:
                ops.append("replace")
            single = [r for r in graph.relations if r.subject == slot]
            if len(single) == 1 and slot not in referenced:
                ops.append("move")
            if not ops:
                continue
            op = ops[rng.integers(len(ops))]
            if op == "recolor":
                taken = {x.color for x in graph.objects if x.name == o.name}
                wrong[slot] = (op, str(rng.choice([c for c in COLORS if c not in taken])))
            elif op == "replace":
                name = str(spare.pop(rng.integers(len(spare))))
                wrong[slot] = (op, name)
            else:
                wrong[slot] = (op, None)
            fix_at = int(rng.integers(position + 1, len(actions) + 1))
            actions.insert(fix_at, (op, slot))
        if spare and rng.random() < augment:
            name = str(spare.pop(rng.integers(len(spare))))
            distractor = len(scene.names)
            scene.names.append(name)
            scene.colors.append(str(rng.choice(COLORS)))
            scene.counts.append(0)
            start = int(rng.integers(0, len(actions)))
            actions.insert(start, ("add", distractor))
            actions.insert(int(rng.integers(start + 1, len(actions) + 1)), ("remove", distractor))
    for slot, (op, value) in wrong.items():
        if op == "recolor":
            scene.colors[slot] = value
        elif op == "replace":
            scene.names[slot] = value
        else:
            for relation in scene.relations:
                if relation[0] == slot:
                    relation[1] = OPPOSITE[relation[1]]

    # 3. Play the actions on the scene, writing each step's texts.
    def describe() -> str:
        return describe_scene(scene.graph(), background)

    steps = [
        StepGoal("background", f"Start with an empty {background} background.", describe(), scene.graph())
    ]
    for op, slot in actions:
        before = scene.obj(slot, 1)
        if op == "add":
            scene.counts[slot] += 1
            relations = scene.relations_of(slot)
            first = scene.counts[slot] == 1
            ins = f"Add {before.phrase(1) if first else 'another ' + before.noun(1)}{_where(relations)}."
            steps.append(StepGoal("add", ins, describe(), scene.graph(), before, None, relations))
            continue
        if op == "remove":
            scene.counts[slot] -= 1
            steps.append(
                StepGoal("remove", f"Remove {before.definite()}.", describe(), scene.graph(), before)
            )
            continue
        if op == "recolor":
            scene.colors[slot] = graph.objects[slot].color
            after = scene.obj(slot, 1)
            ins = f"Change the colour of {before.definite()} to {after.color}."
        elif op == "replace":
            scene.names[slot] = graph.objects[slot].name
            after = scene.obj(slot, 1)
            ins = f"Replace {before.definite()} with {after.phrase(1)}."
        else:  # move
            for relation, original in zip(scene.relations, graph.relations, strict=True):
                if relation[0] == slot:
                    relation[1] = original.predicate
            after = before
            relations = scene.relations_of(slot)
            ins = f"Move {before.definite()}{_where(relations)}."
            steps.append(StepGoal("move", ins, describe(), scene.graph(), before, after, relations))
            continue
        steps.append(StepGoal(op, ins, describe(), scene.graph(), before, after))
    assert steps[-1].graph == graph, (steps[-1].graph, graph)
    return steps


def _where(relations: Sequence[tuple[str, SceneObject]]) -> str:
    """' to the left of the blue square and above the star' (empty without relations)."""
    return "".join(
        (" and " if i else " ") + f"{NATURAL_PREDICATE[p]} {ref.definite()}"
        for i, (p, ref) in enumerate(relations)
    )
