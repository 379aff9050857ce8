"""`text_logits`: each text of a trajectory with the logits that predict it, from one teacher-forced pass.

A text's logits see only what comes before it, so a trajectory and its first steps alone must give the same
logits for the texts they share: a slice taken at the wrong labels would differ.
"""

import pytest
import torch

from pdgen.data.packing import PackingConfig, TrajectoryPacker
from pdgen.data.tokenizer import train_tokenizer
from pdgen.eval.teacher_forcing import text_logits
from pdgen.lit import ProcessDrivenModule
from pdgen.models.bagel import BagelConfig
from pdgen.trajectory import Inspect, Plan, Sketch, Trajectory
from pdgen.world.rollout import rollout

PROMPT = "a photo of a red circle left of a blue square"


@pytest.fixture(scope="module")
def trajectory() -> Trajectory:
    steps = []
    for i, world_step in enumerate(rollout(PROMPT, 0)):
        steps += [Plan(world_step.goal.ins, world_step.goal.des), Sketch(world_step.image.resize((16, 16)))]
        if i == 1:
            steps.append(Inspect("The sketch matches the plan."))
    return Trajectory(PROMPT, steps)


@pytest.fixture(scope="module")
def model(trajectory):
    tokenizer = train_tokenizer([trajectory.to_text()] * 4, vocab_size=400)
    sizes = dict(vae_min_size=16, vae_max_size=16, vit_min_size=16, vit_max_size=32)
    packer = TrajectoryPacker(tokenizer, PackingConfig.for_model(BagelConfig.from_name("embedded"), **sizes))
    torch.manual_seed(0)
    vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    module = ProcessDrivenModule("embedded", vision_start_id=vision_start)
    return module.eval(), packer


def test_every_text_comes_with_one_row_of_logits_a_label(model, trajectory):
    module, packer = model
    texts = text_logits(module, packer, trajectory)
    segments = [seg for seg in trajectory.segments() if seg.role in ("plan", "inspect")]
    assert len(texts) == 1 + len(segments)  # the prompt first
    for split, logits in texts:
        assert logits.shape[0] == len(split.labels)


def test_a_texts_logits_do_not_depend_on_what_follows_it(model, trajectory):
    module, packer = model
    prefix = Trajectory(PROMPT, trajectory.steps[:4])  # the background and the first object
    whole, first = text_logits(module, packer, trajectory), text_logits(module, packer, prefix)
    assert len(first) == 3  # the prompt, the background's plan, the first object's
    for (split, logits), (same_split, same_logits) in zip(whole[:3], first, strict=True):
        assert [label.target for label in split.labels] == [label.target for label in same_split.labels]
        torch.testing.assert_close(logits, same_logits, atol=1e-5, rtol=1e-4)
