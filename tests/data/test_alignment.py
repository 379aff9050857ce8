import json
from dataclasses import replace

import numpy as np
import pytest
from conflict_checks import inspects_the_last_step

from pdgen.data.alignment import (
    KINDS,
    AlignmentSpec,
    Perturbations,
    alignment_samples,
    build_alignment,
    explain,
)
from pdgen.data.datamodules import AlignmentDataModule
from pdgen.data.packing import PackingConfig, TrajectoryPacker
from pdgen.data.shards import ShardSource, read_manifest, split_shards, write_manifest
from pdgen.judges.openai import ChatClient, OpenAIJudge
from pdgen.judges.world import WorldJudge, judge_detections
from pdgen.scene.parser import parse
from pdgen.testing.fake_openai import FakeOpenAI, Reply
from pdgen.trajectory import Inspect, Plan, Refine, Sketch
from pdgen.world.config import DEFAULT_WORLD, WorldConfig
from pdgen.world.rollout import rollout

SMALL = AlignmentSpec(num_samples=9, val_size=3, seed=3, augment=0.3, samples_per_shard=4)
LARGE = WorldConfig.from_name("large")  # room for four objects and one more, and a star


@pytest.fixture(scope="module")
def samples():
    return list(alignment_samples(SMALL))


def test_negatives_name_the_actual_violation_and_positives_have_none(samples):
    judge = WorldJudge(DEFAULT_WORLD)
    assert [s.label for s in samples] == ["positive", "negative", "negative"] * 3
    for s in samples:
        steps = s.trajectory.steps
        draft, inspection = steps[s.inspected], steps[s.inspected + 1]
        assert isinstance(draft, Sketch) and draft.image == s.image
        assert isinstance(steps[s.inspected - 1], Plan) and steps[s.inspected - 1].ins == s.goal.ins
        verdict = judge.check_image(s.image, s.goal)
        assert isinstance(inspection, Inspect)
        if s.label == "positive":
            assert verdict.ok and inspection.refine is None
            assert inspection.text == f"{verdict.analysis} {explain(s.goal.graph)}"
            assert isinstance(steps[s.inspected + 2], Plan)  # a positive is never the answer
        else:
            assert not verdict.ok and inspection == Inspect(verdict.analysis, verdict.refine)
            assert verdict.problems == (s.violation,), s.kind  # the violation the draft has
            fix = steps[s.inspected + 2]
            assert isinstance(fix, Refine) and fix.plan == Plan(verdict.refine, s.goal.des)
            assert judge.check_image(fix.image, s.goal).ok  # the corrected image is the step's own
            assert not inspects_the_last_step(s.trajectory)  # nor is a negative's step the last
        answer = judge_detections(judge.detector.detect(s.trajectory.answer), parse(s.trajectory.prompt))
        assert answer.ok, answer  # every sample goes on to its prompt's answer


def test_negatives_inspect_the_last_step_only_when_asked():
    def at_last(spec):
        return [s for s in alignment_samples(spec) if inspects_the_last_step(s.trajectory)]

    assert not at_last(SMALL) and at_last(replace(SMALL, inspect_last=True))


@pytest.mark.parametrize("kind", KINDS)
def test_each_perturbation_makes_exactly_its_violation(kind):
    steps = rollout("a red circle left of a blue square and two stars", seed=0, config=LARGE)
    perturb, judge = Perturbations(LARGE), WorldJudge(LARGE)
    for seed in range(4):
        draft = perturb.draft(steps, len(steps) - 1, kind, np.random.default_rng(seed))
        assert draft is not None and draft.kind == kind
        verdict = judge.check_image(draft.image, steps[-1].goal)
        assert verdict.problems == (draft.violation,)


def test_in_the_2x2_world_a_relation_is_broken_by_an_exchange_of_places():
    # The reference of "left of" is always in the right column: no free cell is on its right. Seeds whose
    # circle and square share a row (a diagonal pair turns into "right of and above", which the build's
    # judge gate skips as a wrong perturbation).
    perturb, judge = Perturbations(DEFAULT_WORLD), WorldJudge(DEFAULT_WORLD)
    for seed in (0, 5, 6, 7):
        steps = rollout("a red circle left of a blue square", seed=seed)
        square, circle = steps[-1].state.instances
        assert square.cell[0] == circle.cell[0] and square.cell[1] == 1
        draft = perturb.draft(steps, len(steps) - 1, "relation", np.random.default_rng(seed))
        assert draft is not None
        assert draft.violation == "expected the red circle left of the blue square, found it right of"
        assert judge.check_image(draft.image, steps[-1].goal).problems == (draft.violation,)


def test_a_kind_that_cannot_apply_gives_no_draft():
    steps = rollout("a circle", seed=0)  # no colour asked, no relation
    perturb, rng = Perturbations(DEFAULT_WORLD), np.random.default_rng(0)
    assert perturb.draft(steps, 1, "colour", rng) is None and perturb.draft(steps, 1, "relation", rng) is None
    with pytest.raises(ValueError, match="'count' is not one of"):
        Perturbations(DEFAULT_WORLD, ("colour",)).draft(steps, 1, "count", rng)


def test_the_draft_is_read_and_not_learnt_and_the_fix_is_generated(samples, tokenizer):
    negative = samples[1]
    packed = TrajectoryPacker(tokenizer, PackingConfig.from_name("tiny")).sample(negative.trajectory)
    images = [s for s in packed.splits if s.mode != "causal"]
    draft = [s for s in images if s.image == negative.image]
    assert [(s.kind, s.noised) for s in draft] == [("vae", False), ("vit", False)]
    fixed = [s for s in images if s.image == negative.trajectory.steps[negative.inspected + 2].image]
    assert ("vae", True) in [(s.kind, s.noised) for s in fixed]


def test_spec_checks_its_values():
    with pytest.raises(ValueError, match="kinds"):
        AlignmentSpec(kinds=("size",))
    with pytest.raises(ValueError, match="num_samples"):
        AlignmentSpec(num_samples=0)
    assert [AlignmentSpec(negatives_per_positive=1).label(i) for i in range(4)] == [
        "positive", "negative", "positive", "negative",
    ]  # fmt: skip
    spec = AlignmentSpec(kinds=("count", "colour"))
    negatives = [i for i in range(12) if spec.label(i) == "negative"]
    assert [spec.kind(i) for i in negatives] == ["count", "colour"] * 4  # the kinds in turn


def test_build_writes_shards_and_manifest_with_the_counts(tmp_path, samples):
    manifest = build_alignment(tmp_path, SMALL)
    assert read_manifest(tmp_path) == {"format": "pdgen.shards/1", **manifest}
    stats = manifest["stats"]
    assert (stats["total_samples"], stats["positive_samples"], stats["negative_samples"]) == (9, 3, 6)
    assert manifest["negative_kinds"] == {"colour": 1, "count": 2, "extra": 1, "missing": 1, "relation": 1}
    assert manifest["subset"] == "alignment" and manifest["spec"]["kinds"] == list(KINDS)
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
    source = ShardSource(split_shards(tmp_path, manifest, "train"), shuffle=False)
    assert [t for _, t in source.trajectories(0)] == [s.trajectory for s in samples]
    assert manifest["splits"]["val"]["samples"] == 3

    # A build of the inspections' old wording (verdict first) is named, not read as the current one.
    old = {**manifest, "spec": {k: v for k, v in manifest["spec"].items() if k != "inspection_texts"}}
    write_manifest(tmp_path, old)
    with pytest.raises(ValueError, match="manifest.json holds 'alignment' shards built with"):
        AlignmentDataModule(tmp_path, SMALL).prepare_data()


def verdict_reply(ok: bool, analysis: str, refine: str | None) -> Reply:
    return Reply(content=json.dumps({"ok": ok, "analysis": analysis, "refine": refine}))


def test_an_external_judge_writes_no_sample_without_a_valid_verdict(tmp_path):
    spec = AlignmentSpec(num_samples=3, val_size=0, seed=3)
    script = [
        verdict_reply(True, "All there.", "Move it."),  # contradicts itself: retried
        verdict_reply(True, "All there.", None),  # sample 0, positive
        Reply(status=500), Reply(status=500),  # retries spent: this draw is skipped
        verdict_reply(False, "Not as asked.", "Fix it."),  # sample 1, negative
        verdict_reply(True, "Looks right.", None),  # a perturbed draft judged right: skipped
        verdict_reply(False, "Something is off.", "Fix that."),  # sample 2, negative
    ]  # fmt: skip
    with FakeOpenAI(script) as server:
        judge = OpenAIJudge(ChatClient(server.base_url, model="m", max_retries=1, backoff=0.0))
        manifest = build_alignment(tmp_path, spec, judge=judge)
    assert server.remaining == 0
    assert manifest["outcomes"]["judge_failed"] == 1 and manifest["outcomes"]["judge_disagrees"] == 1
    counts = {"ok": 4, "cached": 0, "retried": 2, "failed": 1, "contradictory": 1, "malformed": 0}
    assert manifest["judge_counts"] == counts
    source = ShardSource(split_shards(tmp_path, manifest, "train"), shuffle=False)
    inspections = [step for _, t in source.trajectories(0) for step in t.steps if isinstance(step, Inspect)]
    assert [(i.text.split(".")[0], i.refine) for i in inspections] == [
        ("All there", None), ("Not as asked", "Fix it."), ("Something is off", "Fix that."),
    ]  # fmt: skip
