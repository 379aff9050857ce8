"""Building the multi-turn subset: seeded world trajectories, shards, tokenizer, manifest, and the command."""

from collections import Counter

import pytest

from pdgen.cli import main
from pdgen.data import multiturn, subset_build
from pdgen.data.multiturn import MultiTurnSpec, build_multiturn, multiturn_trajectories, multiturn_trajectory
from pdgen.data.shards import ShardSource, read_manifest, split_shards
from pdgen.data.subset_build import TOKENIZER_VOCAB
from pdgen.data.tokenizer import SpecialTokenIds, load_tokenizer
from pdgen.scene.describe import read_scene, strip_places
from pdgen.scene.parser import parse
from pdgen.trajectory import Plan, Sketch
from pdgen.world.prompts import shapes_eval_prompts

SPEC = MultiTurnSpec(num_trajectories=10, val_size=3, samples_per_shard=4)


def test_a_trajectory_is_plans_and_their_sketches():
    trajectory = multiturn_trajectory(SPEC, 0)
    kinds = [type(step) for step in trajectory.steps]
    assert kinds == [Plan, Sketch] * (len(kinds) // 2) and len(kinds) >= 4  # background + >= 1 object
    assert trajectory.steps[0].ins == "Start with an empty grey background."
    assert trajectory.answer.size == (32, 32)  # the default world renders 32 px, as the embedded trunk draws


def test_trajectories_are_a_function_of_seed_and_index():
    assert multiturn_trajectory(SPEC, 5) == multiturn_trajectory(SPEC, 5)
    others = {multiturn_trajectory(SPEC, i).to_text() for i in range(6)}
    assert len(others) > 1
    reseeded = MultiTurnSpec(num_trajectories=10, seed=1)
    assert [t.to_text() for t in multiturn_trajectories(reseeded)] != [
        t.to_text() for t in multiturn_trajectories(SPEC)
    ]


def test_prompts_come_from_the_train_split_only():
    test_prompts = {row["prompt"] for row in shapes_eval_prompts("test", per_tag=1 << 30)}
    prompts = {t.prompt for t in multiturn_trajectories(MultiTurnSpec(num_trajectories=40))}
    assert prompts and not prompts & test_prompts


def test_free_prompts_are_in_neither_split_and_read_back_to_their_scene():
    rows = shapes_eval_prompts("test", per_tag=1 << 30) + shapes_eval_prompts("train", per_tag=1 << 30)
    spec = MultiTurnSpec(num_trajectories=60, free_prompts=0.5)
    prompts = [t.prompt for t in multiturn_trajectories(spec)]
    free = [p for p in prompts if parse(p).tag is None]  # a template's prompt has a tag
    assert 15 <= len(free) <= 45 and not set(free) & {row["prompt"] for row in rows}
    # the last plan of a free trajectory describes the prompt's scene, as for a template's prompt
    trajectory = next(t for t in multiturn_trajectories(spec) if t.prompt == free[0])
    assert read_scene(strip_places(trajectory.steps[-2].des)) == parse(free[0])
    # without free prompts every prompt is a template's
    templates = MultiTurnSpec(num_trajectories=30, free_prompts=0.0)
    assert all(parse(t.prompt).tag for t in multiturn_trajectories(templates))


def test_augmentation_adds_edit_steps():
    def steps(augment):
        return sum(len(t.steps) for t in multiturn_trajectories(MultiTurnSpec(20, augment=augment)))

    assert steps(1.0) > steps(0.0)


def test_spec_checks_its_values():
    with pytest.raises(ValueError, match="augment is a probability"):
        MultiTurnSpec(augment=2.0)
    with pytest.raises(ValueError, match="free_prompts is a probability"):
        MultiTurnSpec(free_prompts=-0.1)
    with pytest.raises(ValueError, match="unknown world preset 'huge'"):
        MultiTurnSpec(world="huge")


def test_build_writes_shards_tokenizer_and_manifest(tmp_path):
    manifest = build_multiturn(tmp_path, SPEC)
    assert read_manifest(tmp_path) == {"format": "pdgen.shards/1", **manifest}
    assert manifest["spec"] == SPEC.to_dict()
    assert [s["samples"] for s in manifest["splits"]["train"]["shards"]] == [4, 4, 2]
    assert manifest["splits"]["val"]["samples"] == 3
    stats = manifest["stats"]
    assert stats["total_samples"] == 10 and stats["positive_samples"] is None
    assert 2 <= stats["mean_images_per_sample"] <= stats["max_images_per_sample"]

    source = ShardSource(split_shards(tmp_path, manifest, "train"), shuffle=False)
    train = [t for _, t in source.trajectories(0)]
    dead_ends = Counter()  # plans that found no layout, re-planned: counted in the manifest
    assert train == list(multiturn_trajectories(SPEC, "train", dead_ends))
    list(multiturn_trajectories(SPEC, "val", dead_ends))
    assert manifest["dead_ends"] == dict(sorted(dead_ends.items()))

    tokenizer = load_tokenizer(tmp_path / "tokenizer", num_embeddings=TOKENIZER_VOCAB)
    SpecialTokenIds.from_tokenizer(tokenizer)  # every control token is there
    plan = train[0].segments()[5].text  # the first <ins>…</ins><des>…</des>
    assert tokenizer.decode(tokenizer.encode(plan)) == plan
    assert len(tokenizer.encode(plan)) < len(plan) / 3  # trained on the world's language


def test_an_interrupted_build_leaves_no_manifest(tmp_path, monkeypatch):
    def fail(texts, out_dir):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(subset_build, "train_world_tokenizer", fail)  # finish_build calls it
    with pytest.raises(RuntimeError, match="interrupted"):
        build_multiturn(tmp_path, SPEC)
    assert read_manifest(tmp_path) is None  # so prepare_data builds again
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_build_command(tmp_path, capsys):
    out = tmp_path / "mt"
    main(["data", "build", "multiturn", "--out", str(out), "--n", "6", "--val_size", "2", "--augment"])
    printed = capsys.readouterr().out
    assert f"multiturn subset: 2 shards in {out}" in printed  # one train and one val shard
    assert "| Total samples" in printed and "|      6 |" in printed
    manifest = read_manifest(out)
    assert manifest["spec"]["augment"] == multiturn.AUGMENT_FLAG
    with pytest.raises(SystemExit, match="already holds a shard set"):
        main(["data", "build", "multiturn", "--out", str(out), "--n", "6"])
    main(["data", "build", "multiturn", "--out", str(tmp_path / "free"), "--n", "6", "--free_prompts", "0.5"])
    assert read_manifest(tmp_path / "free")["spec"]["free_prompts"] == 0.5
    with pytest.raises(SystemExit, match="--free_prompts is an option of the multiturn, conflict and"):
        main(["data", "build", "base", "--out", str(tmp_path / "base"), "--free_prompts", "0.5"])
