from collections import Counter

import numpy as np

from pdgen.scene.graph import SceneGraph
from pdgen.scene.parser import parse
from pdgen.scene.vocabulary import TAGS
from pdgen.world.config import WorldConfig
from pdgen.world.prompts import free_graph, shapes_eval_prompts, split_key


def _keys(rows):
    return {split_key(SceneGraph.from_geneval(r["include"], r.get("exclude", ()))) for r in rows}


def test_splits_are_disjoint_seeded_and_in_geneval_schema():
    for config in (WorldConfig(), WorldConfig.from_name("all")):
        test = shapes_eval_prompts("test", config, per_tag=40, seed=1)
        train = shapes_eval_prompts("train", config, per_tag=40, seed=1)
        assert not _keys(test) & _keys(train)
        assert {r["tag"] for r in test} == {r["tag"] for r in train} == set(TAGS)
        assert shapes_eval_prompts("test", config, per_tag=40, seed=1) == test
        for row in test + train:
            assert list(row) == (
                ["tag", "include", "exclude", "prompt"] if "exclude" in row else ["tag", "include", "prompt"]
            )
            assert parse(row["prompt"]).to_geneval() == {
                k: row[k] for k in ("include", "exclude") if k in row
            }
    assert shapes_eval_prompts("test", seed=2) != shapes_eval_prompts("test", seed=1)


def test_free_graphs_fit_no_template_and_mix_what_templates_keep_apart():
    rng = np.random.default_rng(0)
    graphs = [free_graph(rng) for _ in range(300)]
    assert all(g.tag is None for g in graphs)  # so never a ShapesEval prompt, of either split
    assert all(sum(o.count for o in g.objects) <= 4 for g in graphs)  # one instance a cell of the 2x2 grid
    kinds = Counter(
        "relation" if g.relations
        else "three" if len(g.objects) == 3
        else "mixed colours" if len({o.color is None for o in g.objects}) == 2
        else "coloured count" if any(o.count > 1 and o.color for o in g.objects)
        else "other"
        for g in graphs
    )  # fmt: skip
    assert min(kinds[k] for k in ("relation", "three", "mixed colours", "coloured count")) > 10, kinds
    for g in graphs[:50]:
        assert parse("a photo of " + g.describe()) == g  # the prompt a build writes reads back to its graph
    assert free_graph(np.random.default_rng(3)) == free_graph(np.random.default_rng(3))
