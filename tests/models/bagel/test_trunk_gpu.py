"""The trunk on a CUDA device: every attention implementation trains the same, the cache agrees there too.

Marked `gpu`: skipped where no CUDA device is present (tests/conftest.py). On the CPU, `flex` has no
backward, so these gradients can only be compared here.
"""

import pytest
import torch
from bagel_testkit import CORPUS, INSPECTED, TWO_TRAJECTORIES, losses, picture, replay_with_cache

from pdgen.trajectory import Inspect, Plan, Sketch, Trajectory

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda_trunk(tiny_trunk):
    return tiny_trunk.to("cuda")


def gradients(trunk, pack, impl):
    trunk.zero_grad()
    trunk.attn_impl = impl
    ce, mse = losses(trunk, pack, torch.Generator("cuda").manual_seed(0))
    (ce + mse).backward()
    grads = {name: p.grad.clone() for name, p in trunk.named_parameters() if p.grad is not None}
    return ce.item(), mse.item(), grads


@pytest.mark.parametrize("impl", ["flex", "triton"])
def test_training_gradients_match_sdpa(cuda_trunk, pack_of, impl):
    pack = pack_of(TWO_TRAJECTORIES).to("cuda")
    ce_ref, mse_ref, ref = gradients(cuda_trunk, pack, "sdpa")
    ce, mse, grads = gradients(cuda_trunk, pack, impl)
    assert ce == pytest.approx(ce_ref, rel=1e-4) and mse == pytest.approx(mse_ref, rel=1e-4)
    assert grads.keys() == ref.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref[name], atol=1e-4, rtol=1e-3, msg=name)


@torch.no_grad()
def test_cached_blocks_equal_the_packed_forward_on_gpu(cuda_trunk, pack_of):
    pack = pack_of([INSPECTED]).to("cuda")
    generator = torch.Generator("cuda").manual_seed(0)
    latents = cuda_trunk.encode_images(pack.vae_images, generator)
    noise = torch.randn(pack.packed_vae_token_indexes.numel(), 64, device="cuda", generator=generator)
    packed = cuda_trunk(pack, latents=latents, noise=noise).hidden_states
    embedded = cuda_trunk.embed_pack(pack, latents=latents, noise=noise)
    cached = replay_with_cache(cuda_trunk, pack, embedded, token_by_token_text=False)
    torch.testing.assert_close(cached, packed, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_the_7b_trunk_trains_a_step_in_bf16(capsys):
    """BAGEL-7B-MoT shapes, random bf16 weights materialised straight onto the GPU from the meta device, one
    forward + backward on a ~5K-token pack with gradient checkpointing. Prints time and peak memory."""
    if torch.cuda.get_device_properties(0).total_memory < 75 * 2**30:
        pytest.skip("needs a GPU with at least 75 GiB")
    from pdgen.data.packing import PackingConfig, TrajectoryPacker
    from pdgen.data.tokenizer import train_tokenizer
    from pdgen.models.bagel import BagelConfig, BagelTrunk, sample_timesteps

    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            trunk = BagelTrunk(BagelConfig.from_name("bagel-7b-mot"))
    finally:
        torch.set_default_dtype(torch.float32)
    trunk.to_empty(device="cuda")
    trunk.init_weights()
    trunk.reset_buffers("cuda")
    trunk.language_model.model.gradient_checkpointing = True

    packer = TrajectoryPacker(
        train_tokenizer(CORPUS, vocab_size=320), PackingConfig.from_name("bagel-7b-mot")
    )
    big = Trajectory(
        "a red circle and a blue square",
        [
            Plan("Add a red circle.", "A red circle."),
            Sketch(picture(512, 512, 0)),
            Inspect("The circle is right."),
            Plan("Add a blue square.", "A circle and a square."),
            Sketch(picture(512, 512, 1)),
        ],
    )
    pack = packer.collate([packer.sample(big)])
    pack.packed_timesteps = sample_timesteps(pack, generator=torch.Generator().manual_seed(0))
    pack = pack.to("cuda")
    for impl in ("sdpa", "triton"):
        trunk.attn_impl = impl
        for step in range(2):  # the first step warms up kernels and the allocator
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            ce, mse = losses(trunk, pack, torch.Generator("cuda").manual_seed(step))
            (ce + mse).backward()
            end.record()
            torch.cuda.synchronize()
            assert torch.isfinite(ce) and torch.isfinite(mse)
            trunk.zero_grad(set_to_none=True)
        with capsys.disabled():
            seconds, peak = start.elapsed_time(end) / 1000, torch.cuda.max_memory_allocated() / 2**30
            print(
                f"\n7B step impl={impl}: {pack.sequence_length} tokens, {seconds:.2f} s fwd+bwd, "
                f"peak {peak:.1f} GiB, ce {ce.item():.2f}, mse {mse.item():.3f}"
            )
