"""ShapesEval: GenEval-schema prompt sets for the shapes world, with disjoint train and test splits.

Every possible prompt of each of GenEval's six tags is enumerated over the world's classes and the ten
colours (counts 2-4, the four relations, two different classes per two-object prompt, two different
colours per `color_attr` prompt). Prompts are grouped by their (tag, classes, colours) tuple (classes and
colours sorted, counts and relations ignored); a seeded shuffle of the tuples sends `test_fraction` of
each tag's tuples to `test` and the rest to `train`, so no tuple is in both splits. Each split then
samples up to `per_tag` prompts per tag. Rows are exactly GenEval's: `tag`, `include`, `exclude` (counting
only), `prompt`, the text written by GenEval's own templates.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from pdgen.scene.graph import Relation, SceneGraph, SceneObject
from pdgen.scene.vocabulary import COLORS, RELATIONS, TAGS
from pdgen.world.config import DEFAULT_WORLD, WorldConfig

SPLITS = ("train", "test")


def all_graphs(tag: str, classes: tuple[str, ...]) -> list[SceneGraph]:
    """Every graph of GenEval tag `tag` over `classes`."""
    pairs = list(itertools.permutations(classes, 2))
    if tag == "single_object":
        return [SceneGraph((SceneObject(c),)) for c in classes]
    if tag == "two_object":
        return [SceneGraph((SceneObject(a), SceneObject(b))) for a, b in pairs]
    if tag == "counting":
        return [SceneGraph((SceneObject(c, n),)) for c in classes for n in (2, 3, 4)]
    if tag == "colors":
        return [SceneGraph((SceneObject(c, 1, k),)) for c in classes for k in COLORS]
    if tag == "position":
        return [
            SceneGraph((SceneObject(a), SceneObject(b)), (Relation(1, r, 0),))
            for a, b in pairs
            for r in RELATIONS
        ]
    if tag == "color_attr":
        return [
            SceneGraph((SceneObject(a, 1, ka), SceneObject(b, 1, kb)))
            for a, b in pairs for ka, kb in itertools.permutations(COLORS, 2)
        ]  # fmt: skip
    raise ValueError(f"unknown tag {tag!r}; tags are {TAGS}")


def split_key(graph: SceneGraph) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
    """The (tag, classes, colours) tuple that decides a prompt's split."""
    return (
        graph.tag,
        tuple(sorted(o.name for o in graph.objects)),
        tuple(sorted(o.color for o in graph.objects if o.color)),
    )


def metadata_row(graph: SceneGraph) -> dict[str, Any]:
    """The GenEval metadata line of a graph: tag, include, exclude?, prompt (in GenEval's key order)."""
    return {"tag": graph.tag, **graph.to_geneval(), "prompt": graph.geneval_prompt()}


def shapes_eval_prompts(
    split: str = "test",
    config: WorldConfig = DEFAULT_WORLD,
    per_tag: int = 50,
    seed: int = 0,
    test_fraction: float = 0.3,
) -> list[dict[str, Any]]:
    """One split of ShapesEval as GenEval metadata rows, tag by tag (see the module docstring).

    Args:
        split: "train" or "test".
        config: the world whose classes the prompts use.
        per_tag: prompts per tag at most (fewer when the split has fewer).
        seed: seeds the tuple split and the sampling; the same seed gives the same sets.
        test_fraction: share of each tag's (tag, classes, colours) tuples that go to test.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown ShapesEval split {split!r}; splits are {SPLITS}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rows = []
    for t, tag in enumerate(TAGS):
        graphs = all_graphs(tag, tuple(config.classes))
        keys = sorted({split_key(g) for g in graphs})
        if len(keys) < 2:
            raise ValueError(
                f"tag {tag!r} has only {len(keys)} (tag, classes, colours) tuple: use more classes"
            )
        rng = np.random.default_rng([seed, t])
        order = rng.permutation(len(keys))
        n_test = min(max(1, math.ceil(test_fraction * len(keys))), len(keys) - 1)
        test = {keys[i] for i in order[:n_test]}
        chosen = [g for g in graphs if (split_key(g) in test) == (split == "test")]
        pick = np.random.default_rng([seed, t, SPLITS.index(split)]).permutation(len(chosen))[:per_tag]
        rows += [metadata_row(chosen[i]) for i in sorted(pick)]
    return rows


FREE_PROMPT_OBJECTS = 3
"""The most distinct classes a free graph (`free_graph`) names."""


def free_graph(rng: np.random.Generator, config: WorldConfig = DEFAULT_WORLD) -> SceneGraph:
    """A random scene graph that fits none of GenEval's six templates: a prompt of neither split.

    GenEval's templates tie a prompt's wording to its tag: an uncoloured pair is always ``two_object``, a
    pair with two colours always ``color_attr``, a count never has a colour. With the default world's three
    classes, a tag's train prompts then give each class the same partner (every uncoloured train prompt that
    names a triangle also names a circle), and a planner learns the partner instead of reading the prompt.
    The paper builds its multi-turn prompts by subsampling richer scene graphs; free graphs are that here:
    one to three classes, each coloured or not (a coin each), one more instance of one of them while a coin
    says so and a cell is free, and, between the first two when they are single, a relation half of the
    time (with a third object after them, the relation is not the last step: the reasoning subsets inspect
    only steps before the last). Reading the prompt is then the only rule that fits every trajectory. A draw
    that fits a template is drawn again, so no free graph is a ShapesEval prompt of either split
    (`split_key`'s tuples carry the tag).
    """
    cells = config.grid**2
    while True:
        k = int(rng.integers(1, min(FREE_PROMPT_OBJECTS, len(config.classes), cells) + 1))
        names = [str(name) for name in rng.choice(config.classes, size=k, replace=False)]
        colors = [str(rng.choice(COLORS)) if rng.random() < 0.5 else None for _ in names]
        counts = [1] * k
        while sum(counts) < cells and rng.random() < 0.5:
            counts[int(rng.integers(k))] += 1
        objects = tuple(map(SceneObject, names, counts, colors))
        relations: tuple[Relation, ...] = ()
        if k > 1 and counts[:2] == [1, 1] and rng.random() < 0.5:
            relations = (Relation(1, str(rng.choice(RELATIONS)), 0),)
        graph = SceneGraph(objects, relations)
        if graph.tag is None:
            return graph
