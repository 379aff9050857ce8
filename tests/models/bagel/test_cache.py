"""The KV-cached inference path reproduces the packed forward pass, split by split."""

import torch
from bagel_testkit import INSPECTED, replay_with_cache

from pdgen.models.bagel import KVCache


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


def test_an_image_block_is_bidirectional_and_a_text_block_causal():
    cache = KVCache(num_layers=1)
    q, k, v = torch.randn(3, 1, 4), torch.randn(3, 1, 4), torch.randn(3, 1, 4)
    later_value_changed = v.clone()
    later_value_changed[2] += 10
    causal = [cache.copy().attend_fn(True, False)(0, q, k, values) for values in (v, later_value_changed)]
    full = [cache.copy().attend_fn(False, False)(0, q, k, values) for values in (v, later_value_changed)]
    assert torch.equal(causal[0][:2], causal[1][:2]), "text token 0 and 1 must not see token 2"
    assert not torch.allclose(full[0][0], full[1][0]), "an image token sees the whole block"
