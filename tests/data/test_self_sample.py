"""Self-sampled conflicts: a checkpoint's own plans judged step by step, written as a conflict build."""

import functools
import zlib

import lightning
import numpy as np
import pytest
import torch
from conflict_checks import WORLD, check_with_world_judge, inspects_the_last_step

from pdgen.data.conflict import ConflictSource, ConflictSpec, build_conflict, conflict_samples
from pdgen.data.conflict_sample import perturb
from pdgen.data.self_sample import SelfSampler, checkpoint_plans
from pdgen.data.shards import ShardSource, read_manifest, split_shards
from pdgen.data.tokenizer import save_tokenizer, train_tokenizer
from pdgen.inference import Script
from pdgen.scene.parser import parse
from pdgen.scene.plan import plan
from pdgen.trajectory import IM_END, IM_START, VISION_START, Inspect
from pdgen.world.config import WorldConfig

LARGE = WorldConfig.from_name("large")  # room for a plan that puts an object on the wrong side


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight tiny `ProcessDrivenModule` checkpoint and a tokenizer for it."""
    from pdgen.lit import ProcessDrivenModule

    root = tmp_path_factory.mktemp("stage1")
    words = train_tokenizer(["<ins>Add a red circle.</ins><des>The scene shows a red circle.</des>"] * 8, 320)
    save_tokenizer(words, root / "tokenizer")
    torch.manual_seed(0)
    module = ProcessDrivenModule("tiny", vision_start_id=words.convert_tokens_to_ids(VISION_START))
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(checkpoint, root / "stage1.ckpt")
    return root / "stage1.ckpt", root / "tokenizer"


def plausible_plans(prompt: str) -> Script:
    """A random model's plans are noise; this script writes the planner's plans instead: for every other
    prompt the plans of a perturbed graph (a model that gets one object, colour or relation wrong)."""
    graph = parse(prompt)
    rng = np.random.default_rng(zlib.crc32(prompt.encode()))
    if zlib.crc32(prompt.encode()) % 2:
        kinds = ["relation"] if graph.relations else ["object"]
        graph = perturb(graph, kinds[0], rng, WORLD.classes)
    steps = plan(graph, rng, classes=WORLD.classes)
    texts = [f"<ins>{s.ins}</ins><des>{s.des}</des>" for s in steps]
    decisions = [VISION_START, IM_START] * (len(steps) - 1) + [VISION_START, IM_END]
    return Script(decisions=decisions, texts=texts)


@pytest.fixture
def one_thread():
    """Many tiny forward passes: on a shared 2-core machine thread hand-offs cost more than the math."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_self_sampled_samples_have_valid_verdicts_and_name_their_violation(
    tiny_checkpoint, tmp_path, one_thread
):
    checkpoint, tokenizer = tiny_checkpoint
    # The cheapest images (they are not kept): two flow steps, 32 px, no guidance. Cached, so the second pass
    # below sees the same generations without running them again.
    plans = functools.cache(
        checkpoint_plans(checkpoint, tokenizer, controller=plausible_plans, num_timesteps=2, max_images=8,
                         image_size=(32, 32), cfg_text_scale=1.0)
    )  # fmt: skip
    spec = ConflictSpec(num_samples=4, val_size=1, world="large", samples_per_shard=2)
    source = ConflictSource(from_ckpt=str(checkpoint), tokenizer=str(tokenizer))
    manifest = build_conflict(tmp_path, spec, source, sampler=SelfSampler(plans, LARGE, inspect_last=True))
    assert manifest["mode"] == "self-sampled"
    stats = manifest["stats"]
    assert stats["total_samples"] == 4 and stats["positive_samples"] + stats["negative_samples"] == 4
    assert stats["negative_samples"] > 0 and stats["positive_samples"] > 0
    assert sum(manifest["outcomes"].values()) >= 5  # every generation is counted, written or not
    # Every written sample is a valid trajectory with exactly one verdict; a negative names a violation.
    source = ShardSource(split_shards(tmp_path, read_manifest(tmp_path), "train"), shuffle=False)
    written = [trajectory for _, trajectory in source.trajectories(0)]
    assert len(written) == 4
    for trajectory in written:
        (inspection,) = [s for s in trajectory.steps if isinstance(s, Inspect)]
        assert ("conflicts with the prompt" in inspection.text) == (inspection.refine is not None)
    # The same samples, with their world goals, pass the world judge's checks.
    again = conflict_samples(spec, sampler=SelfSampler(plans, LARGE, inspect_last=True))
    for sample in again:
        check_with_world_judge(sample, LARGE)
    # By default a conflict in the generation's last step gives no sample, and is counted.
    strict = SelfSampler(plans, LARGE)
    written = list(conflict_samples(spec, sampler=strict))
    assert written and not any(inspects_the_last_step(sample.trajectory) for sample in written)
    assert strict.outcomes["last_step"] > 0
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()
