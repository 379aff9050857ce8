"""The Triton kernel against the dense-mask reference.

Without a GPU these run under ``TRITON_INTERPRET=1`` (set in tests/conftest.py) in fp32, where the
interpreter is exact; small tiles make the small packs span every tile kind. With a GPU the same tests
compile the kernel, and the bf16 test at 7B head geometry runs too.
"""

import pytest
import torch

from pdgen.kernels.packed_attention import (
    FULL,
    PARTIAL,
    SKIP,
    KernelConfig,
    Launch,
    plan_tiles,
    triton_packed_attention,
)
from pdgen.models.attention import packed_attention
from pdgen.models.mask import PackedAttentionMeta

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Tiles of 32 with blocks and steps of 16: small packs span every tile kind, and each program walks its
# tiles in more than one step (and several programs share a tile), as on a GPU with the defaults.
SMALL_TILES = KernelConfig(32, 32, fwd=Launch(16, 16), dkdv=Launch(16, 16), dq=Launch(32, 16))
ONE_STEP_TILES = KernelConfig(16, 16, fwd=Launch(16, 16), dkdv=Launch(16, 16), dq=Launch(16, 16))


def _qkv(T, H, Hkv, D, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(T, h, D, generator=g).to(DEVICE, dtype).requires_grad_() for h in (H, Hkv, Hkv)]


def _outputs_and_grads(impl_fn, q, k, v, grad_out):
    out = impl_fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


def test_tile_plan_matches_the_dense_mask(random_pack):
    meta = PackedAttentionMeta.from_splits(*random_pack(seed=0, max_tokens=150))
    plan = plan_tiles(meta, tile_m=16, tile_n=8, rows_per_chunk=32)

    # Tiles read off the dense mask; padding past the end of the pack is invisible, so no edge tile is full.
    n_qt, n_kt = plan.kind.shape
    visible = torch.zeros(n_qt * 16, n_kt * 8, dtype=torch.bool)
    visible[: meta.num_tokens, : meta.num_tokens] = meta.dense_mask()
    tiles = visible.view(n_qt, 16, n_kt, 8).transpose(1, 2).flatten(2)  # (n_qt, n_kt, 16 * 8)
    expected = torch.where(tiles.all(-1), FULL, torch.where(tiles.any(-1), PARTIAL, SKIP))
    assert torch.equal(plan.kind, expected.to(torch.int8))
    assert {SKIP, PARTIAL, FULL} <= set(plan.kind.unique().tolist())

    row = 3
    full = plan.row_full_index[row, : plan.row_full_count[row]].tolist()
    assert full == (plan.kind[row] == FULL).nonzero().flatten().tolist()
    col = 5
    partial = plan.col_partial_index[col, : plan.col_partial_count[col]].tolist()
    assert partial == (plan.kind[:, col] == PARTIAL).nonzero().flatten().tolist()


@pytest.mark.parametrize(
    ("seed", "max_tokens", "H", "Hkv", "D", "config"),
    [
        (0, 256, 4, 1, 32, SMALL_TILES),  # GQA group 4
        (1, 200, 4, 2, 64, ONE_STEP_TILES),
        (2, 173, 2, 2, 16, SMALL_TILES),  # plain multi-head; T not a multiple of the tile
    ],
)
def test_matches_sdpa_in_output_and_gradients(random_pack, seed, max_tokens, H, Hkv, D, config):
    meta = PackedAttentionMeta.from_splits(*random_pack(seed, max_tokens), device=DEVICE)
    q, k, v = _qkv(meta.num_tokens, H, Hkv, D, seed=seed)
    grad_out = torch.randn_like(q)

    def kernel_fn(*qkv):
        return triton_packed_attention(*qkv, meta, config=config)

    def reference_fn(*qkv):
        return packed_attention(*qkv, meta, impl="sdpa")

    kernel = _outputs_and_grads(kernel_fn, q, k, v, grad_out)
    reference = _outputs_and_grads(reference_fn, q, k, v, grad_out)
    for name, got, want in zip(("out", "dq", "dk", "dv"), kernel, reference, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_plan_is_computed_once_per_pack(random_pack):
    meta = PackedAttentionMeta.from_splits(*random_pack(seed=3, max_tokens=64), device=DEVICE)
    q, k, v = _qkv(meta.num_tokens, 2, 1, 16)
    triton_packed_attention(q, k, v, meta, config=SMALL_TILES).sum().backward()
    cached = [key for key in meta._cache if key[0] == "triton_tiles"]
    assert cached == [("triton_tiles", 32, 32)]


def test_selected_through_packed_attention(random_pack):
    meta = PackedAttentionMeta.from_splits(*random_pack(seed=4, max_tokens=64), device=DEVICE)
    q, k, v = _qkv(meta.num_tokens, 2, 1, 16)
    torch.testing.assert_close(
        packed_attention(q, k, v, meta, impl="triton"), packed_attention(q, k, v, meta, impl="sdpa"),
        atol=1e-4, rtol=1e-4,
    )


def test_config_rejects_blocks_that_do_not_divide_their_tile():
    with pytest.raises(ValueError, match=r"KernelConfig.dkdv.block=128 is larger than its tile side 64"):
        KernelConfig(tile_m=128, tile_n=64, dkdv=Launch(128, 32))
    with pytest.raises(ValueError, match=r"KernelConfig.fwd.step=48: sizes must be powers of two"):
        KernelConfig(fwd=Launch(64, 48))


def test_rejects_head_dims_it_cannot_tile():
    meta = PackedAttentionMeta.from_splits([4], [4], ["causal"])
    q, k, v = (torch.randn(4, 2, 24) for _ in range(3))
    with pytest.raises(ValueError, match="power-of-two head dim >= 16, got D=24"):
        triton_packed_attention(q, k, v, meta)


@pytest.mark.gpu
def test_bf16_at_7b_geometry_is_as_close_as_sdpa_in_bf16(random_pack):
    """bf16 error against an fp32 reference, judged against what SDPA itself makes of bf16 inputs."""
    layout = random_pack(seed=5, max_tokens=1000)
    meta = PackedAttentionMeta.from_splits(*[[n * 4 for n in lens] for lens in layout[:2]], layout[2],
                                           device=DEVICE)
    q, k, v = _qkv(meta.num_tokens, 28, 4, 128, dtype=torch.bfloat16)
    grad_out = torch.randn_like(q)
    fp32 = [t.detach().float().requires_grad_() for t in (q, k, v)]

    def sdpa(*qkv):
        return packed_attention(*qkv, meta, impl="sdpa")

    reference = _outputs_and_grads(sdpa, *fp32, grad_out.float())
    sdpa_bf16 = _outputs_and_grads(sdpa, q, k, v, grad_out)
    kernel = _outputs_and_grads(lambda *qkv: triton_packed_attention(*qkv, meta), q, k, v, grad_out)
    for name, got, base, want in zip(("out", "dq", "dk", "dv"), kernel, sdpa_bf16, reference, strict=True):
        kernel_error = (got.float() - want).abs().max().item()
        sdpa_error = (base.float() - want).abs().max().item()
        assert kernel_error <= 2 * sdpa_error + 1e-3, f"{name}: {kernel_error:.1e} vs sdpa {sdpa_error:.1e}"
