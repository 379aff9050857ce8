from pdgen.scene.graph import SceneGraph
from pdgen.scene.parser import parse
from pdgen.scene.vocabulary import TAGS
from pdgen.world.config import WorldConfig
from pdgen.world.prompts import shapes_eval_prompts, split_key


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
