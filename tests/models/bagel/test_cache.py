"""The KV-cached inference path reproduces the packed forward pass, split by split."""

import pytest
import torch
from bagel_testkit import INSPECTED, replay_with_cache

from pdgen.models.bagel import KVCache
from pdgen.models.bagel.cache import block_attention, causal_mask


@torch.no_grad()
def test_cached_blocks_equal_the_packed_forward(tiny_trunk, pack_of):
    pack = pack_of([INSPECTED])
    assert set(pack.split_modes) == {"causal", "noise", "full"}
    generator = torch.Generator().manual_seed(0)
    latents = tiny_trunk.encode_images(pack.vae_images, generator)
    noise = torch.randn(pack.packed_vae_token_indexes.numel(), 64, generator=generator)
    packed = tiny_trunk(pack, latents=latents, noise=noise).hidden_states
    embedded = tiny_trunk.embed_pack(pack, latents=latents, noise=noise)
    for token_by_token in (False, True):
        cached = replay_with_cache(tiny_trunk, pack, embedded, token_by_token)
        torch.testing.assert_close(cached, packed, atol=1e-5, rtol=1e-5)


def test_copy_forks_a_context():
    cache = KVCache(num_layers=1)
    q, kv = torch.randn(2, 2, 4), torch.randn(2, 1, 4)
    cache.attend_fn(causal=True, update=True)(0, q, kv, kv)
    fork = cache.copy()
    fork.attend_fn(causal=False, update=True)(0, q, kv, kv)
    assert len(cache) == 2 and len(fork) == 4


def test_truncate_takes_the_last_tokens_back_and_leaves_forks_alone():
    cache = KVCache(num_layers=2)
    q, kv = torch.randn(5, 2, 4), torch.randn(5, 1, 4)
    for layer in range(2):
        cache.attend_fn(causal=True, update=True)(layer, q, kv, kv)
    fork = cache.copy()
    cache.truncate(3)
    assert len(cache) == 3 and len(fork) == 5
    assert torch.equal(cache.keys[1], kv[:3].transpose(0, 1)) and torch.equal(
        fork.values[1], kv.transpose(0, 1)
    )
    with pytest.raises(ValueError, match="cannot truncate a KV cache of 3 tokens to 4"):
        cache.truncate(4)


def test_an_image_block_is_bidirectional_and_a_text_block_causal():
    cache = KVCache(num_layers=1)
    q, k, v = torch.randn(3, 1, 4), torch.randn(3, 1, 4), torch.randn(3, 1, 4)
    later_value_changed = v.clone()
    later_value_changed[2] += 10
    causal = [cache.copy().attend_fn(True, False)(0, q, k, values) for values in (v, later_value_changed)]
    full = [cache.copy().attend_fn(False, False)(0, q, k, values) for values in (v, later_value_changed)]
    assert torch.equal(causal[0][:2], causal[1][:2]), "text token 0 and 1 must not see token 2"
    assert not torch.allclose(full[0][0], full[1][0]), "an image token sees the whole block"


def reference_attention(q, keys, values, mask):
    """Softmax attention head by head, query head h reading key-value head h // (H / Hkv)."""
    group = q.shape[1] // keys.shape[1]
    keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)  # (L+Q, H, D)
    scores = torch.einsum("qhd,khd->hqk", q, keys) / q.shape[2] ** 0.5  # (H, Q, L+Q)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), values)  # (Q, H, D)


def test_grouped_query_heads_read_their_own_key_value_head():
    generator = torch.Generator().manual_seed(0)
    past = torch.randn(2, 5, 8, generator=generator), torch.randn(2, 5, 8, generator=generator)  # head-major
    for n_q, causal in [(1, True), (3, True), (3, False)]:  # a decoded token, a text block, an image block
        q = torch.randn(n_q, 4, 8, generator=generator)
        k, v = torch.randn(n_q, 2, 8, generator=generator), torch.randn(n_q, 2, 8, generator=generator)
        out, keys, values = block_attention(
            q, k, v, *past, mask=causal_mask(n_q, 5, 2, q) if causal else None
        )
        mask = torch.ones(n_q, 5 + n_q, dtype=torch.bool)
        if causal:
            mask = mask.tril(5)
        torch.testing.assert_close(
            out, reference_attention(q, keys.transpose(0, 1), values.transpose(0, 1), mask)
        )
        assert torch.equal(keys, torch.cat([past[0], k.transpose(0, 1)], dim=1))
        assert torch.equal(values, torch.cat([past[1], v.transpose(0, 1)], dim=1))


def test_cached_attention_runs_on_the_fused_cpu_kernel():
    # CPU SDPA serves 3-D inputs and `enable_gqa` only on its unfused math path, about twice as slow at the
    # embedded trunk's sizes; `block_attention` must keep reaching the fused kernel (torch 2.13's op name).
    generator = torch.Generator().manual_seed(0)
    past = torch.randn(2, 5, 8, generator=generator), torch.randn(2, 5, 8, generator=generator)
    for n_q, causal in [(1, True), (3, True), (3, False)]:
        q = torch.randn(n_q, 4, 8, generator=generator)
        k, v = torch.randn(n_q, 2, 8, generator=generator), torch.randn(n_q, 2, 8, generator=generator)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            block_attention(q, k, v, *past, mask=causal_mask(n_q, 5, 2, q) if causal else None)
        ops = {event.key for event in profile.key_averages()}
        assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops, (n_q, causal)
        assert "aten::_scaled_dot_product_attention_math" not in ops, (n_q, causal)
