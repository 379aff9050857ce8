"""The three heads on one trunk pass: who is scored on which token, and that the sums are BAGEL's losses."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pdgen.data.packing import CeRole, TrajectoryPacker
from pdgen.models.bagel import BagelTrunk, sample_timesteps
from pdgen.models.heads import GeneratorHead, InspectorHead, PlannerHead, special_owner
from pdgen.trajectory import Plan

sys.path.insert(0, str(Path(__file__).parents[1] / "lit"))
from world_packs import EMBEDDED, embedded_packing, world_trajectory  # noqa: E402

from pdgen.data.tokenizer import train_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    trajectories = [world_trajectory("a photo of a red circle left of a blue square", seed=0)]
    tokenizer = train_tokenizer([t.to_text() for t in trajectories] * 4, vocab_size=400)
    packer = TrajectoryPacker(tokenizer, embedded_packing())
    batch = packer.collate([packer.sample(t) for t in trajectories])
    batch.packed_timesteps = sample_timesteps(batch, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    trunk = BagelTrunk(EMBEDDED)
    with torch.no_grad():
        trunk.llm2vae.weight.normal_(std=0.02)  # a fresh trunk predicts zero velocity
    out = trunk(batch, generator=torch.Generator().manual_seed(1))
    vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    plans = sum(isinstance(step, Plan) for step in trajectories[0].steps)
    return trunk, batch, out, vision_start, plans


def test_every_ce_label_has_exactly_one_owner(setup):
    trunk, batch, out, vision_start, plans = setup
    planner, inspector = PlannerHead(vision_start), InspectorHead(vision_start)
    mine_p, _ = planner.select(batch)
    mine_i, _ = inspector.select(batch)
    assert not (mine_p & mine_i).any() and (mine_p | mine_i).all()
    special = batch.ce_roles == CeRole.SPECIAL
    to_draw = special & (batch.packed_label_ids == vision_start)
    assert to_draw.sum() == plans >= 2, "one <|vision_start|> decision per plan"
    assert mine_p[to_draw].all() and not mine_p[special & ~to_draw].any()
    assert special_owner(batch.packed_label_ids, vision_start).sum() == to_draw.sum()


def test_head_sums_add_up_to_the_whole_pack_ce_and_bagel_mse(setup):
    trunk, batch, out, vision_start, plans = setup
    plan = PlannerHead(vision_start)(trunk, out, batch)
    inspect = InspectorHead(vision_start)(trunk, out, batch)
    logits = trunk.lm_logits(out.hidden_states, batch.ce_loss_indexes)
    whole = F.cross_entropy(logits, batch.packed_label_ids, reduction="sum")
    torch.testing.assert_close(plan.loss_sum + inspect.loss_sum, whole)
    assert plan.count + inspect.count == batch.packed_label_ids.numel()
    assert inspect.count > 0 and "special_acc" in plan.metrics and 0 <= plan.metrics["acc"] <= 1

    generate = GeneratorHead()(trunk, out, batch)
    velocity = trunk.velocity(out.hidden_states, batch.mse_loss_indexes)
    torch.testing.assert_close(generate.mean, (velocity - out.velocity_target).pow(2).mean())
    assert generate.count == batch.mse_loss_indexes.numel() > 0


def test_heads_train_the_trunk_they_share(setup):
    trunk, batch, out, vision_start, plans = setup
    loss = PlannerHead(vision_start)(trunk, out, batch).mean + GeneratorHead()(trunk, out, batch).mean
    loss.backward()
    assert trunk.language_model.lm_head.weight.grad.abs().sum() > 0
    assert trunk.llm2vae.weight.grad.abs().sum() > 0
    trunk.zero_grad()


def test_a_separate_lm_head_is_used_instead_of_the_shared_one(setup):
    trunk, batch, out, vision_start, plans = setup
    own = torch.nn.Linear(trunk.config.llm.hidden_size, trunk.config.llm.vocab_size, bias=False)
    with torch.no_grad():
        own.weight.copy_(trunk.language_model.lm_head.weight)
    shared = InspectorHead(vision_start)(trunk, out, batch)
    separate = InspectorHead(vision_start, lm_head=own)(trunk, out, batch)
    torch.testing.assert_close(separate.loss_sum, shared.loss_sum)
    with torch.no_grad():
        own.weight.zero_()
    uniform = InspectorHead(vision_start, lm_head=own)(trunk, out, batch)
    vocab = trunk.config.llm.vocab_size
    torch.testing.assert_close(uniform.mean, torch.log(torch.tensor(float(vocab))))
