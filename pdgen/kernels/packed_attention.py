"""A Triton FlashAttention-2 kernel for packed interleaved sequences (forward and backward).

Why a kernel of our own: a pack of ~33K tokens holds many trajectories; each mixes causal text,
bidirectional clean images and noised images that nothing else may see. The dense mask of the
reference is O(T^2) memory and spends most of its work on pairs it then throws away; FlexAttention
is generic. Here the mask is never materialised: the kernel re-evaluates BAGEL's rule
(``pdgen.models.mask.may_attend``, the very same function, compiled by ``triton.jit``) from
per-token metadata, and only on the tiles that need it.

Tiles. The (query, key) plane of a pack is cut into tiles of TILE_M queries x TILE_N keys. Once per
pack, ``plan_tiles`` classifies every tile from the metadata:

    skip     no pair may attend          -> never loaded (other samples, future text, foreign noise)
    full     every pair may attend       -> multiplied with no mask and no bounds checks
    partial  some pairs may attend       -> the rule is evaluated per element, bounds checked

and lists, per tile row, its full and its partial key tiles (and per tile column the same over query
tiles, for the key/value gradients). The plan lives in the pack's ``PackedAttentionMeta`` cache and
is reused by every layer and head. Tiles that cross the end of the pack are never full.

Blocks. A program owns a *block* of queries (or keys) inside one tile and walks its tile row (or
column) in *steps*; both divide the tile, so a block inherits its tile's classification exactly
(sub-blocks of a full tile are full; of a partial tile, masked). This decouples the plan, whose
granularity decides how much is skipped, from the launch shapes, which decide how fast a tile goes:

    forward   program: fwd.block query rows x one head     steps: fwd.step keys through the row's
              full tiles, then its partial tiles; online softmax in base 2; writes O and the
              log-sum-exp per row.
    delta     rowsum(O * dO) per row and head, the term the backward subtracts from dP.
    dK, dV    program: dkdv.block keys x one KV head        steps: dkdv.step query rows through the
              column's full then partial tiles, for each of the GROUP = H / Hkv query heads that
              share the KV head (looping over the group inside the program avoids atomics for GQA).
    dQ        program: dq.block query rows x one head       steps: dq.step keys, as in the forward.

Inputs may be bf16, fp16 or fp32; accumulation is always fp32. fp32 inputs are multiplied in IEEE
fp32 (not TF32), so an fp32 run matches the reference closely on a GPU too; bf16 is the fast path.
Head dims must be powers of two >= 16 (128 for BAGEL-7B, 64 and 32 for tiny configs).
Shapes: T packed tokens, H query heads, Hkv key/value heads, D head dim; tensors are (T, heads, D).
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from pdgen.models.mask import PackedAttentionMeta, may_attend

SKIP, PARTIAL, FULL = 0, 1, 2

# The rule is compiled from the very function the reference uses. It is re-bound to this module's
# globals first because Triton's interpreter insists that `triton.language` be visible to it.
_may_attend = triton.jit(types.FunctionType(may_attend.__code__, globals(), may_attend.__name__))


@dataclass(frozen=True)
class Launch:
    """How one kernel walks the tiles: ``block`` rows (or keys) per program, ``step`` per iteration."""

    block: int
    step: int
    num_warps: int = 4
    num_stages: int = 2


@dataclass(frozen=True)
class KernelConfig:
    """Plan granularity and the three kernels' launch shapes.

    Args:
        tile_m: query rows per plan tile; fwd.block, dq.block and dkdv.step must divide it.
        tile_n: keys per plan tile; fwd.step, dq.step and dkdv.block must divide it.
        fwd: forward launch (block = query rows, step = keys).
        dkdv: key/value-gradient launch (block = keys, step = query rows).
        dq: query-gradient launch (block = query rows, step = keys).
    """

    # Defaults: the fastest forward+backward of tools/bench_attention.py's sweep on a 32K-token pack at
    # 7B geometry on an H100 (docs/benchmarks.md). Small tiles skip more of an interleaved pack.
    tile_m: int = 64
    tile_n: int = 64
    fwd: Launch = field(default_factory=lambda: Launch(block=64, step=64, num_warps=4, num_stages=3))
    dkdv: Launch = field(default_factory=lambda: Launch(block=64, step=64, num_warps=4, num_stages=2))
    dq: Launch = field(default_factory=lambda: Launch(block=64, step=64, num_warps=4, num_stages=2))

    def __post_init__(self) -> None:
        # (field, size, the tile side it must divide): all powers of two, so dividing is not exceeding.
        sizes = [
            ("tile_m", self.tile_m, self.tile_m), ("tile_n", self.tile_n, self.tile_n),
            ("fwd.block", self.fwd.block, self.tile_m), ("fwd.step", self.fwd.step, self.tile_n),
            ("dkdv.block", self.dkdv.block, self.tile_n), ("dkdv.step", self.dkdv.step, self.tile_m),
            ("dq.block", self.dq.block, self.tile_m), ("dq.step", self.dq.step, self.tile_n),
        ]
        for name, size, tile in sizes:
            if size < 16 or size & (size - 1):
                raise ValueError(f"KernelConfig.{name}={size}: sizes must be powers of two >= 16")
            if size > tile:
                raise ValueError(f"KernelConfig.{name}={size} is larger than its tile side {tile}")


DEFAULT_CONFIG = KernelConfig()


@dataclass(frozen=True)
class TilePlan:
    """Which key tiles each query tile visits (and the transpose), split into full and partial."""

    kind: torch.Tensor  # (n_qt, n_kt) int8: SKIP / PARTIAL / FULL
    row_full_count: torch.Tensor  # (n_qt,) int32
    row_full_index: torch.Tensor  # (n_qt, n_kt) int32, key tiles; first row_full_count entries used
    row_partial_count: torch.Tensor
    row_partial_index: torch.Tensor
    col_full_count: torch.Tensor  # (n_kt,) int32
    col_full_index: torch.Tensor  # (n_kt, n_qt) int32, query tiles
    col_partial_count: torch.Tensor
    col_partial_index: torch.Tensor

    @property
    def visited_fraction(self) -> float:
        """Share of tiles the kernel loads at all (1 - skipped)."""
        return (self.kind != SKIP).float().mean().item()


def _indices_of(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a boolean matrix: how many entries are set, and their column indices listed first."""
    count = selected.sum(dim=1, dtype=torch.int32)
    index = torch.argsort((~selected).to(torch.int8), dim=1, stable=True).to(torch.int32)
    return count, index.contiguous()


def plan_tiles(meta: PackedAttentionMeta, tile_m: int, tile_n: int, rows_per_chunk: int = 1024) -> TilePlan:
    """Classify every (tile_m x tile_n) tile of the pack as skip, partial or full.

    The rule is evaluated densely, ``rows_per_chunk`` query rows at a time, so memory stays
    O(rows_per_chunk * T) while the result is exact. Positions past the end of the pack get sample ids
    that match nothing, so tiles that cross the end come out partial (or skip), never full.
    """
    T, dev = meta.num_tokens, meta.device
    n_qt, n_kt = triton.cdiv(T, tile_m), triton.cdiv(T, tile_n)

    def padded(x: torch.Tensor, length: int, fill: int) -> torch.Tensor:
        return torch.cat([x, x.new_full((length - T,), fill)])

    k_idx = torch.arange(n_kt * tile_n, device=dev)
    k_sample = padded(meta.sample_id, n_kt * tile_n, -2)
    k_split, k_mode = padded(meta.split_id, n_kt * tile_n, -2), padded(meta.mode, n_kt * tile_n, 0)
    q_sample = padded(meta.sample_id, n_qt * tile_m, -1)
    q_split, q_mode = padded(meta.split_id, n_qt * tile_m, -1), padded(meta.mode, n_qt * tile_m, 0)

    kinds = []
    rows_per_chunk = max(tile_m, rows_per_chunk // tile_m * tile_m)
    for r0 in range(0, n_qt * tile_m, rows_per_chunk):
        q = torch.arange(r0, min(r0 + rows_per_chunk, n_qt * tile_m), device=dev)
        visible = may_attend(
            q[:, None], k_idx[None, :], q_sample[q, None], k_sample[None, :],
            q_split[q, None], k_split[None, :], q_mode[q, None], k_mode[None, :],
        ).view(-1, tile_m, n_kt, tile_n)  # (query tiles, tile_m, n_kt, tile_n)
        any_visible = visible.any(dim=3).any(dim=1)
        all_visible = visible.all(dim=3).all(dim=1)
        kinds.append(torch.where(all_visible, FULL, torch.where(any_visible, PARTIAL, SKIP)).to(torch.int8))
    kind = torch.cat(kinds)  # (n_qt, n_kt)

    row_full_count, row_full_index = _indices_of(kind == FULL)
    row_partial_count, row_partial_index = _indices_of(kind == PARTIAL)
    col_full_count, col_full_index = _indices_of((kind == FULL).T)
    col_partial_count, col_partial_index = _indices_of((kind == PARTIAL).T)
    return TilePlan(kind, row_full_count, row_full_index, row_partial_count, row_partial_index,
                    col_full_count, col_full_index, col_partial_count, col_partial_index)


def tile_plan(meta: PackedAttentionMeta, config: KernelConfig = DEFAULT_CONFIG) -> TilePlan:
    """The pack's tile plan for ``config``, computed on first use and cached on the metadata."""
    key = ("triton_tiles", config.tile_m, config.tile_n)
    return meta.cached(key, lambda: plan_tiles(meta, config.tile_m, config.tile_n))


@triton.jit
def _load_meta(sample_id, split_id, mode, idx, T, OUTSIDE: tl.constexpr):
    """Sample, split and mode of the tokens at ``idx``. Positions past the pack read sample and split
    OUTSIDE (-1 for queries, -2 for keys), which match nothing, so nothing past the pack is visible."""
    in_pack = idx < T
    return (tl.load(sample_id + idx, mask=in_pack, other=OUTSIDE),
            tl.load(split_id + idx, mask=in_pack, other=OUTSIDE),
            tl.load(mode + idx, mask=in_pack, other=0))


@triton.jit
def _step_offsets(index_ptr, i, TILE: tl.constexpr, STEP: tl.constexpr):
    """Token offsets of step ``i`` of a tile list walked STEP tokens at a time (TILE // STEP steps a tile)."""
    tile = tl.load(index_ptr + i // (TILE // STEP))
    return tile * TILE + (i % (TILE // STEP)) * STEP + tl.arange(0, STEP)


# --------------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _fwd_steps(acc, l_i, m_i, q, K, V, sample_id, split_id, mode, rows, q_sample, q_split, q_mode,
               count, index_ptr, T, qk_scale, stride_kt, stride_vt,
               TILE_N: tl.constexpr, STEP: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr,
               PRECISION: tl.constexpr):
    """Online softmax over a list of key tiles (all full, or all partial if MASKED), STEP keys at a time."""
    offs_d = tl.arange(0, HEAD_DIM)
    for i in range(count * (TILE_N // STEP)):
        cols = _step_offsets(index_ptr, i, TILE_N, STEP)
        kT_ptrs = K + cols[None, :] * stride_kt + offs_d[:, None]  # (D, STEP)
        v_ptrs = V + cols[:, None] * stride_vt + offs_d[None, :]  # (STEP, D)
        if MASKED:
            in_pack = cols < T
            kT = tl.load(kT_ptrs, mask=in_pack[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=in_pack[:, None], other=0.0)
            k_sample, k_split, k_mode = _load_meta(sample_id, split_id, mode, cols, T, -2)
            visible = _may_attend(rows[:, None], cols[None, :], q_sample[:, None], k_sample[None, :],
                                  q_split[:, None], k_split[None, :], q_mode[:, None], k_mode[None, :])
            qk = tl.where(visible, tl.dot(q, kT, input_precision=PRECISION) * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            # A row may have seen nothing yet and see nothing here either: keep exp2 away from -inf - -inf.
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            kT = tl.load(kT_ptrs)
            v = tl.load(v_ptrs)
            qk = tl.dot(q, kT, input_precision=PRECISION) * qk_scale  # (BLOCK, STEP)
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_ref = m_new
        p = tl.math.exp2(qk - m_ref[:, None])
        alpha = tl.math.exp2(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)  # (BLOCK, D)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, Out, LSE, sample_id, split_id, mode,
                row_full_count, row_full_index, row_partial_count, row_partial_index,
                T, n_kt, qk_scale,
                stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
                GROUP: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr, BLOCK: tl.constexpr,
                STEP: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr):
    block = tl.program_id(0)
    h = tl.program_id(1)
    qt = block * BLOCK // TILE_M  # the tile row this block of queries lies in
    K += (h // GROUP) * stride_kh
    V += (h // GROUP) * stride_vh
    rows = block * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, HEAD_DIM)
    in_pack = rows < T
    q = tl.load(Q + rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :], mask=in_pack[:, None],
                other=0.0)  # (BLOCK, D), loaded once
    q_sample, q_split, q_mode = _load_meta(sample_id, split_id, mode, rows, T, -1)

    m_i = tl.full([BLOCK], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK], tl.float32)
    acc = tl.zeros([BLOCK, HEAD_DIM], tl.float32)
    acc, l_i, m_i = _fwd_steps(acc, l_i, m_i, q, K, V, sample_id, split_id, mode, rows, q_sample, q_split,
                               q_mode, tl.load(row_full_count + qt), row_full_index + qt * n_kt, T, qk_scale,
                               stride_kt, stride_vt, TILE_N, STEP, HEAD_DIM, False, PRECISION)
    acc, l_i, m_i = _fwd_steps(acc, l_i, m_i, q, K, V, sample_id, split_id, mode, rows, q_sample, q_split,
                               q_mode, tl.load(row_partial_count + qt), row_partial_index + qt * n_kt, T,
                               qk_scale, stride_kt, stride_vt, TILE_N, STEP, HEAD_DIM, True, PRECISION)
    # Every token sees at least itself, so l_i > 0 on rows inside the pack; rows past the end are not stored.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    tl.store(LSE + h * T + rows, m_i + tl.math.log2(l_safe), mask=in_pack)
    tl.store(Out + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
             (acc / l_safe[:, None]).to(Out.dtype.element_ty), mask=in_pack[:, None])


# --------------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------------


@triton.jit
def _delta_kernel(Out, DO, DELTA, T, stride_ot, stride_oh, stride_dot, stride_doh,
                  BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """delta[h, t] = sum_d O[t, h, d] * dO[t, h, d] in fp32: the softmax-Jacobian term of row t."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    h = tl.program_id(1)
    offs_d = tl.arange(0, HEAD_DIM)
    in_pack = rows < T
    o = tl.load(Out + rows[:, None] * stride_ot + h * stride_oh + offs_d[None, :], mask=in_pack[:, None])
    do = tl.load(DO + rows[:, None] * stride_dot + h * stride_doh + offs_d[None, :], mask=in_pack[:, None])
    tl.store(DELTA + h * T + rows, tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1), mask=in_pack)


@triton.jit
def _dkdv_steps(dk, dv, k, v, Q, DO, LSE, DELTA, sample_id, split_id, mode, cols, k_sample, k_split, k_mode,
                count, index_ptr, T, qk_scale, stride_qt, stride_dot,
                TILE_M: tl.constexpr, STEP: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr,
                PRECISION: tl.constexpr):
    """Accumulate dK, dV of one key block over a list of query tiles (one query head), STEP rows at a time."""
    offs_d = tl.arange(0, HEAD_DIM)
    for i in range(count * (TILE_M // STEP)):
        rows = _step_offsets(index_ptr, i, TILE_M, STEP)
        q_ptrs = Q + rows[:, None] * stride_qt + offs_d[None, :]
        do_ptrs = DO + rows[:, None] * stride_dot + offs_d[None, :]
        if MASKED:
            in_pack = rows < T
            q = tl.load(q_ptrs, mask=in_pack[:, None], other=0.0)
            do = tl.load(do_ptrs, mask=in_pack[:, None], other=0.0)
            lse = tl.load(LSE + rows, mask=in_pack, other=0.0)
            delta = tl.load(DELTA + rows, mask=in_pack, other=0.0)
            q_sample, q_split, q_mode = _load_meta(sample_id, split_id, mode, rows, T, -1)
            visible = _may_attend(rows[None, :], cols[:, None], q_sample[None, :], k_sample[:, None],
                                  q_split[None, :], k_split[:, None], q_mode[None, :], k_mode[:, None])
            qkT = tl.dot(k, tl.trans(q), input_precision=PRECISION)
            pT = tl.where(visible, tl.math.exp2(qkT * qk_scale - lse[None, :]), 0.0)
        else:
            q = tl.load(q_ptrs)
            do = tl.load(do_ptrs)
            lse = tl.load(LSE + rows)
            delta = tl.load(DELTA + rows)
            qkT = tl.dot(k, tl.trans(q), input_precision=PRECISION)  # (BLOCK, STEP)
            pT = tl.math.exp2(qkT * qk_scale - lse[None, :])
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, sample_id, split_id, mode,
                 col_full_count, col_full_index, col_partial_count, col_partial_index,
                 T, n_qt, qk_scale, sm_scale,
                 stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
                 GROUP: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr, BLOCK: tl.constexpr,
                 STEP: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr):
    block = tl.program_id(0)
    hkv = tl.program_id(1)
    kt = block * BLOCK // TILE_N  # the tile column this block of keys lies in
    cols = block * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, HEAD_DIM)
    in_pack = cols < T
    k_offsets = cols[:, None] * stride_kt + hkv * stride_kh + offs_d[None, :]
    v_offsets = cols[:, None] * stride_vt + hkv * stride_vh + offs_d[None, :]
    k = tl.load(K + k_offsets, mask=in_pack[:, None], other=0.0)  # (BLOCK, D)
    v = tl.load(V + v_offsets, mask=in_pack[:, None], other=0.0)
    k_sample, k_split, k_mode = _load_meta(sample_id, split_id, mode, cols, T, -2)
    full_count, partial_count = tl.load(col_full_count + kt), tl.load(col_partial_count + kt)

    dk = tl.zeros([BLOCK, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK, HEAD_DIM], tl.float32)
    for g in range(GROUP):
        h = hkv * GROUP + g
        Qh, DOh, LSEh, DELTAh = Q + h * stride_qh, DO + h * stride_doh, LSE + h * T, DELTA + h * T
        dk, dv = _dkdv_steps(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, sample_id, split_id, mode,
                             cols, k_sample, k_split, k_mode, full_count, col_full_index + kt * n_qt,
                             T, qk_scale, stride_qt, stride_dot, TILE_M, STEP, HEAD_DIM, False, PRECISION)
        dk, dv = _dkdv_steps(dk, dv, k, v, Qh, DOh, LSEh, DELTAh, sample_id, split_id, mode,
                             cols, k_sample, k_split, k_mode, partial_count, col_partial_index + kt * n_qt,
                             T, qk_scale, stride_qt, stride_dot, TILE_M, STEP, HEAD_DIM, True, PRECISION)
    # DK and DV are contiguous like K and V.
    tl.store(DK + k_offsets, (dk * sm_scale).to(DK.dtype.element_ty), mask=in_pack[:, None])
    tl.store(DV + v_offsets, dv.to(DV.dtype.element_ty), mask=in_pack[:, None])


@triton.jit
def _dq_steps(dq, q, do, lse, delta, K, V, sample_id, split_id, mode, rows, q_sample, q_split, q_mode,
              count, index_ptr, T, qk_scale, stride_kt, stride_vt,
              TILE_N: tl.constexpr, STEP: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr,
              PRECISION: tl.constexpr):
    """Accumulate dQ of one query block over a list of key tiles, STEP keys at a time."""
    offs_d = tl.arange(0, HEAD_DIM)
    for i in range(count * (TILE_N // STEP)):
        cols = _step_offsets(index_ptr, i, TILE_N, STEP)
        k_ptrs = K + cols[:, None] * stride_kt + offs_d[None, :]  # (STEP, D)
        vT_ptrs = V + cols[None, :] * stride_vt + offs_d[:, None]  # (D, STEP)
        if MASKED:
            in_pack = cols < T
            k = tl.load(k_ptrs, mask=in_pack[:, None], other=0.0)
            vT = tl.load(vT_ptrs, mask=in_pack[None, :], other=0.0)
            k_sample, k_split, k_mode = _load_meta(sample_id, split_id, mode, cols, T, -2)
            visible = _may_attend(rows[:, None], cols[None, :], q_sample[:, None], k_sample[None, :],
                                  q_split[:, None], k_split[None, :], q_mode[:, None], k_mode[None, :])
            qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)
            p = tl.where(visible, tl.math.exp2(qk * qk_scale - lse[:, None]), 0.0)
        else:
            k = tl.load(k_ptrs)
            vT = tl.load(vT_ptrs)
            qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BLOCK, STEP)
            p = tl.math.exp2(qk * qk_scale - lse[:, None])
        dp = tl.dot(do, vT, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def _dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, sample_id, split_id, mode,
               row_full_count, row_full_index, row_partial_count, row_partial_index,
               T, n_kt, qk_scale, sm_scale,
               stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
               GROUP: tl.constexpr, TILE_M: tl.constexpr, TILE_N: tl.constexpr, BLOCK: tl.constexpr,
               STEP: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr):
    block = tl.program_id(0)
    h = tl.program_id(1)
    qt = block * BLOCK // TILE_M
    K += (h // GROUP) * stride_kh
    V += (h // GROUP) * stride_vh
    rows = block * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, HEAD_DIM)
    in_pack = rows < T
    q_offsets = rows[:, None] * stride_qt + h * stride_qh + offs_d[None, :]
    q = tl.load(Q + q_offsets, mask=in_pack[:, None], other=0.0)
    do = tl.load(DO + rows[:, None] * stride_dot + h * stride_doh + offs_d[None, :], mask=in_pack[:, None],
                 other=0.0)
    lse = tl.load(LSE + h * T + rows, mask=in_pack, other=0.0)
    delta = tl.load(DELTA + h * T + rows, mask=in_pack, other=0.0)
    q_sample, q_split, q_mode = _load_meta(sample_id, split_id, mode, rows, T, -1)

    dq = tl.zeros([BLOCK, HEAD_DIM], tl.float32)
    dq = _dq_steps(dq, q, do, lse, delta, K, V, sample_id, split_id, mode, rows, q_sample, q_split, q_mode,
                   tl.load(row_full_count + qt), row_full_index + qt * n_kt, T, qk_scale, stride_kt,
                   stride_vt, TILE_N, STEP, HEAD_DIM, False, PRECISION)
    dq = _dq_steps(dq, q, do, lse, delta, K, V, sample_id, split_id, mode, rows, q_sample, q_split, q_mode,
                   tl.load(row_partial_count + qt), row_partial_index + qt * n_kt, T, qk_scale, stride_kt,
                   stride_vt, TILE_N, STEP, HEAD_DIM, True, PRECISION)
    # DQ is contiguous like Q.
    tl.store(DQ + q_offsets, (dq * sm_scale).to(DQ.dtype.element_ty), mask=in_pack[:, None])


# --------------------------------------------------------------------------------------------------
# autograd wrapper
# --------------------------------------------------------------------------------------------------

LOG2E = 1.4426950408889634  # the kernels work in base 2: exp(x) = exp2(x * log2(e))


def _dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs are multiplied in IEEE fp32, not TF32: whoever passes fp32 asked for exactness."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    D = q.shape[-1]
    if D < 16 or D & (D - 1):
        raise ValueError(f"the Triton kernel needs a power-of-two head dim >= 16, got D={D}")
    if q.dtype not in (torch.bfloat16, torch.float16, torch.float32) or not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one of bf16/fp16/fp32, got {q.dtype}, {k.dtype}, {v.dtype}")


def _launch(launch: Launch, config: KernelConfig, q: torch.Tensor, k: torch.Tensor) -> dict:
    """The compile-time arguments every kernel takes."""
    return dict(GROUP=q.shape[1] // k.shape[1], TILE_M=config.tile_m, TILE_N=config.tile_n,
                BLOCK=launch.block, STEP=launch.step, HEAD_DIM=q.shape[2], PRECISION=_dot_precision(q.dtype),
                num_warps=launch.num_warps, num_stages=launch.num_stages)


class _PackedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, meta: PackedAttentionMeta, scale: float, config: KernelConfig):
        _check_inputs(q, k, v)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        T, H, _ = q.shape
        plan = tile_plan(meta, config)
        o = torch.empty_like(q)
        lse = torch.empty((H, T), device=q.device, dtype=torch.float32)  # base-2 log-sum-exp of scaled scores
        _fwd_kernel[(triton.cdiv(T, config.fwd.block), H)](
            q, k, v, o, lse, meta.sample_id, meta.split_id, meta.mode,
            plan.row_full_count, plan.row_full_index, plan.row_partial_count, plan.row_partial_index,
            T, plan.kind.shape[1], scale * LOG2E,
            *q.stride()[:2], *k.stride()[:2], *v.stride()[:2], *o.stride()[:2],
            **_launch(config.fwd, config, q, k),
        )
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.meta, ctx.scale, ctx.config = meta, scale, config
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        meta, scale, config = ctx.meta, ctx.scale, ctx.config
        plan = tile_plan(meta, config)
        do = do.contiguous()
        T, H, D = q.shape
        Hkv = k.shape[1]
        n_qt, n_kt = plan.kind.shape
        delta = torch.empty_like(lse)  # (H, T)
        _delta_kernel[(triton.cdiv(T, config.dq.block), H)](
            o, do, delta, T, *o.stride()[:2], *do.stride()[:2], BLOCK=config.dq.block, HEAD_DIM=D,
        )
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        strides = (*q.stride()[:2], *k.stride()[:2], *v.stride()[:2], *do.stride()[:2])
        _dkdv_kernel[(triton.cdiv(T, config.dkdv.block), Hkv)](
            q, k, v, do, dk, dv, lse, delta, meta.sample_id, meta.split_id, meta.mode,
            plan.col_full_count, plan.col_full_index, plan.col_partial_count, plan.col_partial_index,
            T, n_qt, scale * LOG2E, scale, *strides, **_launch(config.dkdv, config, q, k),
        )
        _dq_kernel[(triton.cdiv(T, config.dq.block), H)](
            q, k, v, do, dq, lse, delta, meta.sample_id, meta.split_id, meta.mode,
            plan.row_full_count, plan.row_full_index, plan.row_partial_count, plan.row_partial_index,
            T, n_kt, scale * LOG2E, scale, *strides, **_launch(config.dq, config, q, k),
        )
        return dq, dk, dv, None, None, None


def triton_packed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    meta: PackedAttentionMeta,
    scale: float | None = None,
    config: KernelConfig = DEFAULT_CONFIG,
) -> torch.Tensor:
    """Packed attention under BAGEL's rule, differentiable in q, k and v.

    Args:
        q: (T, H, D) queries; k, v: (T, Hkv, D) with H % Hkv == 0.
        meta: the pack's metadata; its tile plan is cached on it for reuse across layers.
        scale: softmax scale, default 1/sqrt(D).
        config: plan granularity and launch shapes.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return _PackedAttention.apply(q, k, v, meta, scale, config)
