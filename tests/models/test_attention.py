"""The implementations of BAGEL's packed attention rule and their agreement (the rule: test_mask.py)."""

import pytest
import torch

from pdgen.models import attention
from pdgen.models.attention import _warn_fallback, packed_attention, sdpa_layout
from pdgen.models.mask import PackedAttentionMeta


def test_packed_attention_rejects_mismatched_shapes():
    meta = PackedAttentionMeta.from_splits([4], [4], ["causal"])
    q, kv = torch.randn(4, 6, 8), torch.randn(4, 4, 8)
    with pytest.raises(ValueError, match="H divisible by Hkv"):
        packed_attention(q, kv, kv, meta)
    with pytest.raises(ValueError, match="unknown attention impl 'dense'"):
        packed_attention(q, torch.randn(4, 2, 8), torch.randn(4, 2, 8), meta, impl="dense")


def _qkv(T, H=4, Hkv=2, D=16, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(T, h, D, generator=g).to(device, dtype).requires_grad_() for h in (H, Hkv, Hkv)]


def _explicit_softmax_attention(q, k, v, mask):
    """Attention written out by hand: the reference's own reference."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return torch.einsum("hqk,khd->qhd", weights, v)


@pytest.mark.parametrize("seed", range(3))
def test_sdpa_matches_explicit_softmax(random_pack, seed):
    meta = PackedAttentionMeta.from_splits(*random_pack(seed, max_tokens=120))
    q, k, v = _qkv(meta.num_tokens, seed=seed)
    expected = _explicit_softmax_attention(q, k, v, meta.dense_mask())
    torch.testing.assert_close(packed_attention(q, k, v, meta, impl="sdpa"), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_sdpa_gradients_match_explicit_softmax(random_pack, seed):
    meta = PackedAttentionMeta.from_splits(*random_pack(seed, max_tokens=120))
    q, k, v = _qkv(meta.num_tokens, seed=seed)
    grad_out = torch.randn_like(q)
    ours = torch.autograd.grad(packed_attention(q, k, v, meta, impl="sdpa"), (q, k, v), grad_out)
    explicit = _explicit_softmax_attention(q, k, v, meta.dense_mask())
    expected = torch.autograd.grad(explicit, (q, k, v), grad_out)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_sdpa_batches_samples_of_similar_length_and_pads_them():
    # Three samples of 10-11 tokens share a batch (padding costs < 25 % more attention); 30 and 1 go alone.
    lens = [11, 30, 10, 1, 10]
    meta = PackedAttentionMeta.from_splits(lens, lens, ["causal"] * len(lens))
    layout = sdpa_layout(meta, torch.float32)
    assert layout.batches == [(1, 30), (3, 11), (1, 1)]
    assert [m.shape for m in layout.masks] == [(1, 1, 30, 30), (3, 1, 11, 11), (1, 1, 1, 1)]
    padded = layout.masks[1][1, 0]  # the 10-token sample in an 11-wide batch: its 11th slot is padding
    assert padded[10, 10] == 0, "a padded query sees itself (one that sees nothing would be NaN)"
    assert torch.isinf(padded[:10, 10]).all(), "no real query sees a padded key"
    assert torch.equal(padded[:10, :10] == 0, meta.dense_mask()[41:51, 41:51])
    assert layout.index[layout.unpad].tolist() == list(range(sum(lens)))


@pytest.mark.parametrize("seed", range(3))
def test_sdpa_attends_in_query_chunks_over_the_keys_they_reach(random_pack, seed, monkeypatch):
    monkeypatch.setattr(attention, "SDPA_QUERY_CHUNK", 8)  # cuts every sample of more than 8 tokens
    meta = PackedAttentionMeta.from_splits(*random_pack(seed, max_tokens=120))
    layout = sdpa_layout(meta, torch.float32)
    trimmed = 0
    for (_, width), mask, chunks in zip(layout.batches, layout.masks, layout.chunks, strict=True):
        assert [rows for _, rows, _ in chunks] == [min(8, width - a) for a in range(0, width, 8)]
        for start, rows, keys in chunks:
            assert torch.isinf(mask[:, :, start : start + rows, keys:]).all(), "no key past `keys` is seen"
            assert (mask[:, :, start : start + rows, keys - 1] == 0).any(), "the last key is seen"
            trimmed += keys < width
    assert trimmed
    q, k, v = _qkv(meta.num_tokens, seed=seed)
    grad_out = torch.randn_like(q)
    out = packed_attention(q, k, v, meta, impl="sdpa")
    explicit = _explicit_softmax_attention(q, k, v, meta.dense_mask())
    torch.testing.assert_close(out, explicit, atol=1e-5, rtol=1e-5)
    ours = torch.autograd.grad(out, (q, k, v), grad_out)
    expected = torch.autograd.grad(explicit, (q, k, v), grad_out)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_flex_matches_sdpa_forward(random_pack, seed):
    meta = PackedAttentionMeta.from_splits(*random_pack(seed, max_tokens=300))
    q, k, v = (t.detach() for t in _qkv(meta.num_tokens, seed=seed))  # no FlexAttention backward on CPU
    flex = packed_attention(q, k, v, meta, impl="flex")
    torch.testing.assert_close(flex, packed_attention(q, k, v, meta, impl="sdpa"), atol=1e-5, rtol=1e-5)


def test_triton_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _warn_fallback.cache_clear()  # the warning is once per process; earlier tests may have used it up
    meta = PackedAttentionMeta.from_splits([5], [2, 3], ["causal", "full"])
    q, k, v = _qkv(5)
    with pytest.warns(UserWarning, match="cannot run here; using impl='sdpa'"):
        out = packed_attention(q, k, v, meta, impl="triton")
    torch.testing.assert_close(out, packed_attention(q, k, v, meta, impl="sdpa"))


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(2))
def test_flex_gradients_match_sdpa_on_gpu(random_pack, seed):
    meta = PackedAttentionMeta.from_splits(*random_pack(seed, max_tokens=1000), device="cuda")
    q, k, v = _qkv(meta.num_tokens, H=8, Hkv=2, D=64, device="cuda", seed=seed)
    grad_out = torch.randn_like(q)
    grads = {}
    for impl in ("sdpa", "flex"):
        out = packed_attention(q, k, v, meta, impl=impl)
        grads[impl] = (out, *torch.autograd.grad(out, (q, k, v), grad_out))
    for flex, sdpa in zip(grads["flex"], grads["sdpa"], strict=True):
        torch.testing.assert_close(flex, sdpa, atol=2e-3, rtol=2e-3)
