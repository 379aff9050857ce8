import sys
import time

import pytest
import torch
import torch.nn.functional as F
from bagel_testkit import INSPECTED, TWO_TRAJECTORIES, losses, picture

from pdgen.models.bagel import BagelConfig, BagelTrunk, qwen2_mot, trunk
from pdgen.models.bagel.qwen2_mot import ExpertRoute, Streams
from pdgen.models.bagel.trunk import patchify_latent, unpatchify_latent
from pdgen.trajectory import Plan, Sketch, Trajectory

TRAINED = [
    "language_model.model.embed_tokens.weight",
    "language_model.lm_head.weight",
    "language_model.model.layers.1.mlp_moe_gen.down_proj.weight",
    "language_model.model.layers.1.self_attn.q_proj.weight",
    "time_embedder.mlp.0.weight",
    "vae2llm.weight",
    "llm2vae.weight",
    "connector.fc1.weight",
    "vit_model.vision_model.embeddings.patch_embedding.weight",
]


def test_forward_backward_on_two_packed_trajectories(tiny_trunk, pack_of):
    pack = pack_of(TWO_TRAJECTORIES)
    ce, mse = losses(tiny_trunk, pack, torch.Generator().manual_seed(0))
    assert torch.isfinite(ce) and torch.isfinite(mse)
    (ce + mse).backward()
    grads = {name: p.grad for name, p in tiny_trunk.named_parameters() if p.requires_grad}
    for name in TRAINED:
        assert grads[name] is not None and torch.isfinite(grads[name]).all(), name
        assert grads[name].abs().sum() > 0, name
    assert not any(name.startswith("vae.") for name in grads), "the autoencoder is frozen"


def test_a_tiny_training_step_is_well_under_a_second(tiny_trunk, pack_of):
    """Autoencoder encode + forward + backward + AdamW on two trajectories (226 tokens), on one thread: about
    0.12 s here. One thread, because two threads on a machine shared with other test runs spin and stall."""
    pack = pack_of(TWO_TRAJECTORIES)
    optimizer = torch.optim.AdamW([p for p in tiny_trunk.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    timings, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(3):
            start = time.perf_counter()
            ce, mse = losses(tiny_trunk, pack, generator)
            (ce + mse).backward()
            optimizer.step()
            optimizer.zero_grad()
            timings.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert min(timings) < 0.5, timings


def test_velocity_target_lines_up_with_mse_indexes(tiny_trunk, pack_of):
    pack = pack_of(TWO_TRAJECTORIES[1:])  # one image: noised copy, then clean copy
    latents = [torch.randn(16, *(2 * side for side in grid)) for grid in pack.vae_latent_shapes]
    n = pack.vae_latent_shapes[0][0] * pack.vae_latent_shapes[0][1]
    noise = torch.randn(2 * n, 64)
    out = tiny_trunk(pack, latents=latents, noise=noise)
    x0 = patchify_latent(latents[0], pack.vae_latent_shapes[0], 2)
    torch.testing.assert_close(out.velocity_target, noise[:n] - x0)


def test_unsampled_timesteps_are_rejected(tiny_trunk, packer):
    pack = packer.collate([packer.sample(TWO_TRAJECTORIES[1])])  # noised times still NaN
    with pytest.raises(ValueError, match="sample_timesteps"):
        tiny_trunk(pack)


def test_flex_attention_forward_matches_sdpa(tiny_trunk, pack_of):
    pack = pack_of(TWO_TRAJECTORIES)
    with torch.no_grad():  # torch 2.13's FlexAttention has no CPU backward
        sdpa = tiny_trunk(pack, generator=torch.Generator().manual_seed(0)).hidden_states
        flex = tiny_trunk(pack, generator=torch.Generator().manual_seed(0), attn_impl="flex").hidden_states
    torch.testing.assert_close(flex, sdpa, atol=1e-5, rtol=1e-5)


def test_latent_patchify_order_and_inverse():
    latent = torch.arange(2 * 4 * 6.0).reshape(2, 4, 6)  # (Z=2, 4, 6) -> grid (2, 3) of 2x2 patches
    tokens = patchify_latent(latent, (2, 3), 2)
    assert tokens.shape == (6, 8)
    # token 1 is grid cell (0, 1); its vector runs (row-in-patch, col-in-patch, channel)
    expected = [latent[c, r, 2 + q].item() for r in range(2) for q in range(2) for c in range(2)]
    assert tokens[1].tolist() == expected
    assert torch.equal(unpatchify_latent(tokens, (2, 3), 2), latent)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_trunk, pack_of):
    pack = pack_of(TWO_TRAJECTORIES)

    def grad_of_embedding():
        tiny_trunk.zero_grad()
        ce, mse = losses(tiny_trunk, pack, torch.Generator().manual_seed(0))
        (ce + mse).backward()
        return tiny_trunk.language_model.model.embed_tokens.weight.grad.clone()

    plain = grad_of_embedding()
    tiny_trunk.language_model.model.gradient_checkpointing = True
    torch.testing.assert_close(grad_of_embedding(), plain)


def test_pixel_latents_are_encoded_in_one_call_per_image_size(monkeypatch):
    embedded = BagelTrunk(BagelConfig.from_name("embedded"))  # the lossless pixel autoencoder
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, *size, generator=g) * 2 - 1 for size in ((32, 32), (16, 32), (32, 32))]
    one_by_one = [embedded.vae.encode(image[None])[0] for image in images]
    calls = []
    encode = embedded.vae.encode
    monkeypatch.setattr(embedded.vae, "encode", lambda x, **kw: calls.append(len(x)) or encode(x, **kw))
    for got, want in zip(embedded.encode_images(images), one_by_one, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert calls == [2, 1]


def test_the_trunk_never_imports_flash_attn(tiny_config):
    BagelTrunk(tiny_config)
    assert "flash_attn" not in sys.modules


class EveryExpertOnEveryRow(ExpertRoute):
    """The readable routing: both experts run on all T rows, and a merge keeps each row's own expert's."""

    def split(self, x):
        return Streams(x, x)

    def merge(self, x):
        is_gen = torch.zeros(self.num_tokens, dtype=torch.bool)
        is_gen[self.gen] = True
        return torch.where(is_gen.view(-1, *[1] * (x.und.dim() - 1)), x.gen, x.und)


def whole_pack_attention(q, k, v, meta, impl, scale=None):
    """The readable attention: one SDPA over the whole pack with its (T, T) mask, no batching by sample."""
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=meta.dense_mask(), enable_gqa=True
    )
    return out.transpose(0, 1)


def losses_and_gradients(trunk, pack):
    trunk.zero_grad()
    ce, mse = losses(trunk, pack, torch.Generator().manual_seed(0))
    (ce + mse).backward()
    grads = {name: p.grad.clone() for name, p in trunk.named_parameters() if p.grad is not None}
    return torch.stack([ce, mse]).detach(), grads


ONE_IMAGE = [  # the base stage's short samples: a caption and one image, nearly equal lengths
    Trajectory(f"a picture number {i}", [Plan("Add it.", "It."), Sketch(picture(32, 32, 10 + i))])
    for i in range(5)
]


@pytest.mark.parametrize(
    "trajectories", [[*TWO_TRAJECTORIES, INSPECTED], ONE_IMAGE], ids=["turns", "one-image"]
)
def test_losses_and_gradients_equal_the_readable_reference_path(
    tiny_trunk, pack_of, monkeypatch, trajectories
):
    """The fast step (each expert on its own rows, samples batched for attention) computes the numbers of
    the plainest one (every expert on every row, attention over the whole pack) to fp32 rounding."""
    pack = pack_of(trajectories)
    fast_losses, fast_grads = losses_and_gradients(tiny_trunk, pack)
    monkeypatch.setattr(qwen2_mot, "ExpertRoute", EveryExpertOnEveryRow)
    monkeypatch.setattr(trunk, "packed_attention", whole_pack_attention)
    reference_losses, reference_grads = losses_and_gradients(tiny_trunk, pack)

    torch.testing.assert_close(fast_losses, reference_losses, rtol=1e-5, atol=0)
    assert fast_grads.keys() == reference_grads.keys()
    scale = max(g.abs().max() for g in reference_grads.values())
    for name, grad in fast_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
