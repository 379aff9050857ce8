"""The edit subset: a picture of the shapes world and a request to change it, reached one plan at a time.

BAGEL edits as well as it draws, and the paper's trajectory opens with an optional input image. An edit
sample here is that case, exact: the input image is a world scene, the prompt an edit request, and the
steps the world's own plans (places named, ``pdgen.world.places``) with the render after each::

    input: [red circle top left, green square top right]
    prompt: "Change the colour of the red circle to blue, then remove the green square."
    <ins>Change the colour of the red circle to blue.</ins><des>The scene shows a blue circle and a green
        square on a grey background. Places: green square at the top right, blue circle at the top left.</des>
    [render]
    <ins>Remove the green square.</ins><des>The scene shows a blue circle on a grey background. Places: blue
        circle at the top left.</des>
    [render]

Edit types (``EDIT_TYPES``), each drawn with the same probability:

- ``recolor``: "Change the colour of the red circle to blue." (in place);
- ``replace``: "Replace the red circle with a red square." (in place, the colour kept, as the world's
  replace does);
- ``add``: "Add a blue triangle below the green square." (a relation to an object that is there; the plan
  names the cell it chose);
- ``remove``: "Remove the green square.";
- ``move``: "Move the red circle below the green square." (a relation that does not hold yet, reached
  through a free cell: an edit that would have to exchange two objects is drawn again);
- ``combo``: two of the above on different objects, "…, then …", one plan each. The second never
  touches what the first made or related to, so both requests can be checked on the final image.

What is in this file, top to bottom: ``ObjectRef`` and ``EditOp`` (an edit as data, the form ShapesEdit
scores against, ``pdgen.eval.edits``); ``WorldEdit`` and ``draw_edit`` (one edit drawn and carried out in the
world); ``EditSpec``, ``edit_sample`` and ``build_edit`` (the subset's shards); ``EditDataModule``.

Train and test requests never meet: a request belongs to the test split when a hash of its text says so
(``request_split``, one in ten), and the builder only keeps train requests, ShapesEdit only test ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pdgen.console import counter
from pdgen.data.packing_config import PackingGeometry
from pdgen.data.reading import ReaderConfig, ShardDataModule
from pdgen.data.subset_build import (
    check_spec,
    finish_build,
    split_indexes,
    world_config,
    write_splits,
)
from pdgen.editors.world import WorldEditor
from pdgen.eval.geneval import relative_position
from pdgen.scene.describe import describe_scene
from pdgen.scene.graph import NATURAL_PREDICATE, Relation, SceneGraph, SceneObject
from pdgen.scene.plan import StepGoal
from pdgen.scene.vocabulary import COLORS, RELATIONS
from pdgen.trajectory import Trajectory
from pdgen.world.config import WorldConfig
from pdgen.world.layout import Box, LayoutError, Placed, WorldState
from pdgen.world.places import with_places
from pdgen.world.render import render
from pdgen.world.rollout import WorldStep, rollout, trajectory_steps

log = logging.getLogger(__name__)

SUBSET = "edit"
"""The manifest's ``subset`` for this build."""
SINGLE_EDITS = ("recolor", "replace", "add", "remove", "move")
EDIT_TYPES = (*SINGLE_EDITS, "combo")
"""The edit types, as ShapesEdit reports them."""
TEST_SHARE = 10
"""One request in this many belongs to the test split (``request_split``)."""
MAX_SOURCE_OBJECTS = 3
"""Objects in an input scene, at most: a 2x2 grid keeps a free cell for an add or a move."""

Key = tuple[str, str]
"""An object's (class, colour): unique within every scene here, so "the red circle" names one object."""
Relational = tuple[Key, str, Key]
"""A relation by keys: (subject, predicate, reference)."""


class NoEdit(ValueError):
    """This scene has no edit of the kind drawn (no free cell, nothing to relate to, a taken key...);
    ``reason`` is what the builder counts it under."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def request_split(request: str) -> str:
    """``"test"`` for one request text in ``TEST_SHARE`` (by a stable hash), ``"train"`` for the others."""
    digest = hashlib.sha256(request.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_SHARE == 0 else "train"


# --------------------------------------------------------------------------------------------------------
# An edit as data


@dataclass(frozen=True)
class ObjectRef:
    """One object of a scene: its class, colour and grid cell (row, column)."""

    name: str
    color: str
    cell: tuple[int, int]

    @property
    def key(self) -> Key:
        return (self.name, self.color)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "color": self.color, "cell": list(self.cell)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectRef:
        return cls(str(data["name"]), str(data["color"]), (int(data["cell"][0]), int(data["cell"][1])))


@dataclass(frozen=True)
class EditOp:
    """One requested change. ``target``: the object it acts on, as the input scene has it (recolor, replace,
    remove, move); ``result``: the (class, colour) it makes (recolor, replace, add; a move's is its
    target's); ``relation``: (predicate, reference key) the made or moved object must stand in."""

    op: str
    target: ObjectRef | None = None
    result: Key | None = None
    relation: tuple[str, Key] | None = None

    def to_dict(self) -> dict[str, Any]:
        relation = None if self.relation is None else [self.relation[0], list(self.relation[1])]
        return {
            "op": self.op,
            "target": None if self.target is None else self.target.to_dict(),
            "result": None if self.result is None else list(self.result),
            "relation": relation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditOp:
        target, result, relation = data.get("target"), data.get("result"), data.get("relation")
        return cls(
            str(data["op"]),
            None if target is None else ObjectRef.from_dict(target),
            None if result is None else (str(result[0]), str(result[1])),
            None if relation is None else (str(relation[0]), (str(relation[1][0]), str(relation[1][1]))),
        )


def scene_objects(state: WorldState) -> list[ObjectRef]:
    """The objects of a world state, in placing order."""
    return [ObjectRef(p.name, p.color, p.cell) for p in state.instances]


# --------------------------------------------------------------------------------------------------------
# Drawing an edit and carrying it out


@dataclass(frozen=True)
class WorldEdit:
    """An edit drawn in the world: the input scene, the request, its parts and the world after each.

    Attributes:
        kind: one of ``EDIT_TYPES``.
        request: the prompt.
        source: the input scene; ``source_image`` its render.
        ops: the requested changes, in order (two for a combo).
        steps: one per op: its plan (places named), the world after it and its render.
    """

    kind: str
    request: str
    source: WorldState
    source_image: Image.Image
    ops: tuple[EditOp, ...]
    steps: tuple[WorldStep, ...]

    def trajectory(self) -> Trajectory:
        """The training sample: the input image, the request, then a Plan and its Sketch per op."""
        return Trajectory(self.request, trajectory_steps(self.steps), input_image=self.source_image)

    def case(self) -> dict[str, Any]:
        """What ShapesEdit scores against (``pdgen.eval.edits``): the request, its type (``tag``), the input
        scene, the ops and the expected scene, as JSON-ready data."""
        return {
            "prompt": self.request,
            "tag": self.kind,
            "source": [o.to_dict() for o in scene_objects(self.source)],
            "edits": [op.to_dict() for op in self.ops],
            "expected": [o.to_dict() for o in scene_objects(self.steps[-1].state)],
        }


class _Scene:
    """The edit in progress: the world state, the scene graph the plans describe, and what is spoken for."""

    def __init__(self, state: WorldState, config: WorldConfig, rng: np.random.Generator) -> None:
        self.state = state
        self.config = config
        self.rng = rng
        self.editor = WorldEditor(config, rng)
        self.relations: list[Relational] = []
        self.used: set[Key] = {p.key for p in state.instances}  # every key ever in the scene: no reuse
        self.reserved: set[Key] = set()  # what an earlier op made or related to: a later op leaves it alone

    def keys(self) -> list[Key]:
        return [(p.name, p.color) for p in self.state.instances]

    def pick(self, what: str) -> int:
        """A random instance an op may act on (not reserved)."""
        free = [i for i, p in enumerate(self.state.instances) if (p.name, p.color) not in self.reserved]
        if not free:
            raise NoEdit(f"{what}/nothing_to_edit")
        return int(free[self.rng.integers(len(free))])

    def new_key(self, what: str, name: str | None = None, color: str | None = None) -> Key:
        """A (class, colour) the scene has never had, with ``name`` or ``color`` fixed when given."""
        names = [name] if name else list(self.config.classes)
        colors = [color] if color else list(COLORS)
        options = [(n, c) for n in names for c in colors if (n, c) not in self.used]
        if not options:
            raise NoEdit(f"{what}/no_new_object")
        return options[self.rng.integers(len(options))]

    def apply(
        self,
        op: str,
        ins: str,
        target: SceneObject | None,
        result: SceneObject | None,
        relation: tuple[str, SceneObject] | None,
    ) -> WorldStep:
        """Carry out one op; its step, places named.

        Raises:
            NoEdit: the world has no room for it, or would have to exchange two objects (a move).
        """
        graph, relations = self.graph_after(op, target, result, relation)
        goal = StepGoal(
            op, ins, describe_scene(graph), graph, target, result, () if relation is None else (relation,)
        )
        before = self.state
        try:
            after = self.editor.apply(before, goal)
        except LayoutError as error:
            raise NoEdit(f"{op}/layout") from error
        if op == "move" and _others_moved(before, after, target):
            raise NoEdit("move/exchange")  # the world would swap two objects: not a one-object edit
        self.state, self.relations = after, relations
        if self.config.name_places:
            goal = with_places(goal, before, after, self.config.grid)
        return WorldStep(goal, after, render(after, self.config))

    def graph_after(
        self,
        op: str,
        target: SceneObject | None,
        result: SceneObject | None,
        relation: tuple[str, SceneObject] | None,
    ) -> tuple[SceneGraph, list[Relational]]:
        """The scene graph after the op and the relations it holds, by key. Objects keep the world's placing
        order (a moved object is placed again, last), which the world editor follows."""
        keys = self.keys()
        relations = list(self.relations)
        old = None if target is None else target.key
        if op in ("recolor", "replace"):
            assert result is not None and old is not None
            new = result.key
            keys = [new if k == old else k for k in keys]
            relations = [(new if s == old else s, p, new if r == old else r) for s, p, r in relations]
        elif op in ("remove", "move"):
            keys = [k for k in keys if k != old] + ([old] if op == "move" else [])
            relations = [(s, p, r) for s, p, r in relations if old not in (s, r)]
        if op in ("add", "move"):
            assert relation is not None and target is not None  # an add's target is what it adds
            keys += [target.key] if op == "add" else []
            relations.append((target.key, relation[0], relation[1].key))
        objects = tuple(SceneObject(name, 1, color) for name, color in keys)
        indexed = tuple(Relation(keys.index(s), p, keys.index(r)) for s, p, r in relations)
        return SceneGraph(objects, indexed), relations


def _others_moved(before: WorldState, after: WorldState, moved: SceneObject | None) -> bool:
    assert moved is not None
    cells = {p.key: p.cell for p in before.instances if p.key != moved.key}
    return any(cells.get(p.key, p.cell) != p.cell for p in after.instances)


def _draw_op(scene: _Scene, op: str) -> tuple[str, EditOp, WorldStep]:
    """Draw one op of kind ``op`` on the scene and carry it out: (its request sentence, the op, its step)."""
    rng, state = scene.rng, scene.state
    if op == "add":
        if len(state.instances) >= scene.config.grid**2:
            raise NoEdit("add/no_free_cell")
        name, color = scene.new_key(op)
        made = SceneObject(name, 1, color)
        ins, relation, step = _related(scene, op, made, state.instances)
        edit = EditOp(op, None, made.key, (relation[0], relation[1].key))
        scene.used.add(made.key)
        scene.reserved |= {made.key, relation[1].key}
        return ins, edit, step
    index = scene.pick(op)
    placed = state.instances[index]
    target = SceneObject(placed.name, 1, placed.color)
    ref = ObjectRef(placed.name, placed.color, placed.cell)
    result: SceneObject | None = None
    if op == "recolor":
        result = SceneObject(placed.name, 1, scene.new_key(op, name=placed.name)[1])
        ins = f"Change the colour of {target.definite()} to {result.color}."
        step = scene.apply(op, ins, target, result, None)
        edit = EditOp(op, ref, result.key)
    elif op == "replace":
        others = [c for c in scene.config.classes if c != placed.name and (c, placed.color) not in scene.used]
        if not others:
            raise NoEdit("replace/no_new_object")
        result = SceneObject(str(others[rng.integers(len(others))]), 1, placed.color)
        ins = f"Replace {target.definite()} with {result.phrase(1)}."
        step = scene.apply(op, ins, target, result, None)
        edit = EditOp(op, ref, result.key)
    elif op == "remove":
        ins = f"Remove {target.definite()}."
        step = scene.apply(op, ins, target, None, None)
        edit = EditOp(op, ref)
    elif op == "move":
        if len(state.instances) >= scene.config.grid**2:
            raise NoEdit("move/no_free_cell")
        anchors = [p for i, p in enumerate(state.instances) if i != index]
        ins, relation, step = _related(scene, op, target, anchors, placed.box)
        edit = EditOp(op, ref, target.key, (relation[0], relation[1].key))
        scene.reserved.add(relation[1].key)
    else:
        raise ValueError(f"unknown edit {op!r}; edits are {', '.join(SINGLE_EDITS)}")
    if result is not None:
        scene.used.add(result.key)
        scene.reserved.add(result.key)
    scene.reserved.add(target.key)
    return ins, edit, step


def _related(
    scene: _Scene, op: str, subject: SceneObject, anchors: Sequence[Placed], box: Box | None = None
) -> tuple[str, tuple[str, SceneObject], WorldStep]:
    """An add or move of ``subject`` in some relation to one of ``anchors``, the pairs tried in a random order
    (a move only to a relation that does not hold of ``box`` yet): (sentence, relation, step).

    Raises:
        NoEdit: no pair works (``"<op>/no_place"``).
    """
    pairs = [
        (a, p) for a in anchors for p in RELATIONS if box is None or p not in relative_position(box, a.box)
    ]
    for number in scene.rng.permutation(len(pairs)):
        placed, predicate = pairs[number]
        anchor = SceneObject(placed.name, 1, placed.color)
        verb = "Add" if op == "add" else "Move"
        thing = subject.phrase(1) if op == "add" else subject.definite()
        ins = f"{verb} {thing} {NATURAL_PREDICATE[predicate]} {anchor.definite()}."
        try:
            return (
                ins,
                (predicate, anchor),
                scene.apply(op, ins, subject, subject if op == "move" else None, (predicate, anchor)),
            )
        except NoEdit:
            continue
    raise NoEdit(f"{op}/no_place")


def _source_scene(rng: np.random.Generator, config: WorldConfig) -> WorldStep:
    """An input scene: 1 to ``MAX_SOURCE_OBJECTS`` objects of distinct (class, colour), made by a rollout."""
    count = int(rng.integers(1, MAX_SOURCE_OBJECTS + 1))
    keys = [(str(n), str(c)) for n in config.classes for c in COLORS]
    chosen = rng.choice(len(keys), size=count, replace=False)
    graph = SceneGraph(tuple(SceneObject(keys[i][0], 1, keys[i][1]) for i in chosen))
    return rollout(graph, int(rng.integers(1 << 62)), config)[-1]


def draw_edit(
    rng: np.random.Generator,
    config: WorldConfig,
    kind: str | None = None,
    split: str | None = "train",
    attempts: int = 200,
    redraws: Counter[str] | None = None,
) -> WorldEdit:
    """An edit of ``kind`` (default: drawn uniformly from ``EDIT_TYPES``) on a fresh input scene.

    Draws are retried with the same generator until one works, so the result is a function of the
    generator's state; each retry is added to ``redraws`` by why (``"move/exchange"``, ``"split"``, ...).

    Args:
        rng: the generator every choice comes from.
        config: the world.
        kind: the edit type; None draws one.
        split: keep only requests of this split (``request_split``); None keeps every request.
        attempts: draws before giving up.
        redraws: a counter of the draws that gave nothing, by reason.

    Raises:
        ValueError: an unknown kind, or no edit in ``attempts`` draws.
    """
    if kind is not None and kind not in EDIT_TYPES:
        raise ValueError(f"unknown edit type {kind!r}; types are {', '.join(EDIT_TYPES)}")
    redraws = Counter() if redraws is None else redraws
    chosen = kind or str(EDIT_TYPES[rng.integers(len(EDIT_TYPES))])  # drawn once: a kind that is often
    for _ in range(attempts):  # redrawn is not rarer for it
        ops = [str(o) for o in rng.choice(SINGLE_EDITS, size=2)] if chosen == "combo" else [chosen]
        source = _source_scene(rng, config)
        scene = _Scene(source.state, config, rng)
        try:
            done = [_draw_op(scene, op) for op in ops]
        except NoEdit as error:
            redraws[error.reason] += 1
            continue
        sentences = [ins for ins, _, _ in done]
        request = sentences[0] if len(sentences) == 1 else f"{sentences[0][:-1]}, then {_lower(sentences[1])}"
        if split is not None and request_split(request) != split:
            redraws["split"] += 1
            continue
        return WorldEdit(chosen, request, source.state, source.image, tuple(e for _, e, _ in done),
                         tuple(s for _, _, s in done))  # fmt: skip
    raise ValueError(f"no {kind or 'edit'} found in {attempts} draws ({dict(redraws)})")


def _lower(sentence: str) -> str:
    return sentence[:1].lower() + sentence[1:]


# --------------------------------------------------------------------------------------------------------
# The subset


@dataclass(frozen=True)
class EditSpec:
    """What an edit build contains; equal specs give byte-identical samples.

    Args:
        num_samples: training samples.
        val_size: held-out samples (train-split requests, other seeds).
        seed: the data seed; sample ``i`` depends on ``(seed, i)`` only.
        world: the world preset (``WorldConfig.from_name``).
        samples_per_shard: samples per webdataset shard.
    """

    num_samples: int = 5000
    val_size: int = 64
    seed: int = 0
    world: str = "default"
    samples_per_shard: int = 500

    def __post_init__(self) -> None:
        check_spec(self, {"num_samples": 1, "val_size": 0, "samples_per_shard": 1})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def edit_sample(spec: EditSpec, index: int, redraws: Counter[str] | None = None) -> WorldEdit:
    """Edit number ``index`` of the build (validation ones are numbered from 2**40): a train-split request."""
    return draw_edit(np.random.default_rng([spec.seed, index]), world_config(spec.world), redraws=redraws)


def edit_samples(
    spec: EditSpec, split: str = "train", redraws: Counter[str] | None = None
) -> Iterator[WorldEdit]:
    """Every edit of one split of the build, in index order."""
    return (
        edit_sample(spec, index, redraws) for index in split_indexes(split, spec.num_samples, spec.val_size)
    )


def build_edit(root: str | os.PathLike[str], spec: EditSpec, progress: bool = False) -> dict[str, Any]:
    """Write the edit subset under ``root``: shards, tokenizer and, last, the manifest; returns it.

    The layout and atomicity of every subset (``pdgen.data.multiturn.build_multiturn``). The manifest adds the
    count of each edit type (``edit_types``) and of the draws that gave no edit, by why (``redraws``).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log.info("building %d + %d edit samples in %s (%s)", spec.num_samples, spec.val_size, root, spec)
    kinds: Counter[str] = Counter()
    redraws: Counter[str] = Counter()

    def trajectories(split: str) -> Iterator[Trajectory]:
        for edit in edit_samples(spec, split, redraws):
            kinds[edit.kind] += split == "train"
            yield edit.trajectory()

    bar = counter(spec.num_samples + spec.val_size, f"building {SUBSET} in {root}", "samples", progress)
    splits, stats, texts = write_splits(root, spec.samples_per_shard, trajectories, bar)
    edit_types = {kind: kinds[kind] for kind in EDIT_TYPES}
    redrawn = dict(sorted(redraws.items()))
    return finish_build(
        root, {"subset": SUBSET}, spec.to_dict(), splits, stats, texts, edit_types=edit_types, redraws=redrawn
    )


class EditDataModule(ShardDataModule):
    """The edit subset: an input image, an edit request, and the world's plans and renders that carry it out.

    ``prepare_data`` builds the shards under ``root`` when they are missing; the input image is laid out as
    the packer lays out every input image (a clean VAE copy and a ViT copy before the prompt).

    Args:
        root: the shard set's directory; built there if it holds none.
        build: the edit samples to build (``EditSpec``: ``num_samples``, ``world``, ...); its ``seed`` also
            seeds the shard order, the shuffle and prompt dropout.
        tokenizer: a tokenizer directory; None uses the one trained with the shards.
        reader: how edit samples are read into packs (``pdgen.data.reading.ReaderConfig``).
        geometry: the trunk's image geometry, which ``pdgen fit`` links from ``model.trunk``.
    """

    subset = SUBSET
    builder = staticmethod(build_edit)

    def __init__(
        self,
        root: str | os.PathLike[str] = "data/edit",
        build: EditSpec = EditSpec(),
        tokenizer: str | os.PathLike[str] | None = None,
        reader: ReaderConfig = ShardDataModule.default_reader,
        geometry: PackingGeometry | None = None,
    ) -> None:
        super().__init__(root, build, tokenizer, reader, geometry)
