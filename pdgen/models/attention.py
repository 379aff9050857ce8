"""Attention over packed interleaved sequences: the implementations of BAGEL's mask rule.

The rule itself (``may_attend``) and the per-token metadata of a pack (``PackedAttentionMeta``) live in
``pdgen.models.mask``. All implementations consume that one function: ``sdpa`` broadcasts it into dense
boolean masks, one per sample (the readable reference, and the CPU training path), ``flex`` uses it as a
FlexAttention ``mask_mod``, and ``triton`` (``pdgen/kernels/packed_attention.py``) compiles it into the
kernel to mask the tiles it cannot skip.

Shapes: T packed tokens, H query heads, Hkv key/value heads (GQA: H % Hkv == 0), D head dim.
Tensors are in the packed "varlen" layout BAGEL uses: q (T, H, D), k and v (T, Hkv, D).
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from pdgen.models.mask import PackedAttentionMeta, SplitMode, may_attend

AttentionImpl = Literal["sdpa", "flex", "triton"]
IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "flex", "triton")


def packed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    meta: PackedAttentionMeta,
    impl: AttentionImpl = "sdpa",
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention of a pack under BAGEL's rule.

    Args:
        q: (T, H, D) queries.
        k: (T, Hkv, D) keys, H % Hkv == 0.
        v: (T, Hkv, D) values.
        meta: the pack's metadata, from ``PackedAttentionMeta.from_splits``.
        impl: ``sdpa`` (dense mask; the reference), ``flex`` (FlexAttention) or ``triton`` (pdgen's
            kernel). ``triton`` falls back to ``flex`` on CUDA or ``sdpa`` elsewhere, with a one-line
            warning, where the kernel cannot run.
        scale: softmax scale, default 1/sqrt(D).

    Returns:
        (T, H, D) attention output.
    """
    T, H, D = q.shape
    if k.shape != v.shape or k.shape[0] != T or k.shape[2] != D or H % k.shape[1]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: expected q (T, H, D) "
                         f"and k, v (T, Hkv, D) with H divisible by Hkv")
    if meta.num_tokens != T:
        raise ValueError(f"meta describes {meta.num_tokens} tokens but q has {T}")
    scale = D**-0.5 if scale is None else scale
    if impl == "triton":
        if triton_available(q.device):
            from pdgen.kernels.packed_attention import triton_packed_attention

            return triton_packed_attention(q, k, v, meta, scale=scale)
        impl = "flex" if q.is_cuda else "sdpa"
        _warn_fallback(impl)
    if impl == "sdpa":
        return _sdpa(q, k, v, meta, scale)
    if impl == "flex":
        return _flex(q, k, v, meta, scale)
    raise ValueError(f"unknown attention impl {impl!r}; expected one of {', '.join(IMPLEMENTATIONS)}")


def triton_available(device: torch.device) -> bool:
    """The kernel runs on CUDA devices, and anywhere under ``TRITON_INTERPRET=1`` (slowly: tests only)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _warn_fallback(impl: str) -> None:
    warnings.warn(f"pdgen: the Triton attention kernel cannot run here; using impl={impl!r}", stacklevel=3)


# Padding a group to its longest sample may cost at most this much more attention than the samples need.
SDPA_PADDING_SLACK = 1.25
# Queries of a batch attend in chunks of this many rows, each over the keys its rows can reach.
SDPA_QUERY_CHUNK = 128


@dataclass(frozen=True)
class SdpaLayout:
    """The samples of a pack as a few padded batches, so that ``sdpa`` makes one call per batch.

    The rule never lets a sample see another, so the (T, T) mask is block-diagonal and attention can run
    sample by sample: sum(n_i^2) work instead of T^2. One call per sample, though, costs a dispatch (and,
    in backward, a gradient the size of the pack) per sample and layer, which dominates for many short
    samples. So samples are grouped, longest first, into (B, L) batches padded to their longest member
    while that costs at most ``SDPA_PADDING_SLACK`` times the samples' own attention; a pack of equal
    lengths is one batch. No real query sees a padded key and padded outputs are dropped, so the result is
    the per-sample one.

    Within a batch, a query never sees a key past the end of its own split (the rule is causal but for
    bidirectional images), so the queries attend in chunks of ``SDPA_QUERY_CHUNK`` rows, each over the
    keys up to the last one a row of the chunk may see. CPU SDPA skips no masked block by itself (only
    ``is_causal`` trims keys), and its backward with a mask costs about a third more than without: for
    four 510-token multi-turn samples, chunks of 128 queries took a layer's attention (forward and
    backward) from 33 to 21 ms, less than the unmasked causal kernel's 26 ms.

    Attributes:
        index: (sum B*L,) long, the pack row each batch slot reads (padding reads its sample's first row).
        batches: (B, L) of each batch, in ``index`` order.
        masks: per batch, (B, 1, L, L) additive mask (0 where allowed, -inf elsewhere).
        unpad: (T,) long, the slot of ``index`` that holds each pack row.
        chunks: per batch, the (first row, rows, keys) of each query chunk: its rows see no key past
            ``keys``.
    """

    index: torch.Tensor
    batches: list[tuple[int, int]]
    masks: list[torch.Tensor]
    unpad: torch.Tensor
    chunks: list[list[tuple[int, int, int]]]

    @classmethod
    def build(cls, meta: PackedAttentionMeta, dtype: torch.dtype) -> SdpaLayout:
        lens = meta.sample_lens()
        starts = [0, *itertools.accumulate(lens)][:-1]
        order = sorted(range(len(lens)), key=lambda s: -lens[s])
        groups: list[list[int]] = []
        for s in order:
            group = groups[-1] if groups else None
            if group and (len(group) + 1) * lens[group[0]] ** 2 <= SDPA_PADDING_SLACK * sum(
                lens[g] ** 2 for g in [*group, s]
            ):
                group.append(s)
            else:
                groups.append([s])
        device = meta.device
        index, unpad, batches, masks, chunks = [], torch.empty(meta.num_tokens, dtype=torch.long), [], [], []
        slots = 0  # slots of the batches so far
        for group in groups:
            width = lens[group[0]]
            offset = torch.arange(width)  # (L,)
            valid = offset[None, :] < torch.tensor([lens[s] for s in group])[:, None]  # (B, L)
            first = torch.tensor([starts[s] for s in group])[:, None]  # (B, 1)
            rows = torch.where(valid, first + offset, first)  # (B, L) pack rows; padding -> first row
            slot = slots + torch.arange(rows.numel()).view(rows.shape)  # (B, L)
            unpad[rows[valid]] = slot[valid]
            slots += rows.numel()
            # The rule within a sample compares offsets; a padding slot lies past every real token in a split
            # of its own, so by the rule itself no real query sees it and it sees itself (a query that sees
            # nothing would be NaN). Padded outputs are dropped, so what else padding sees is harmless.
            rows_d, valid_d = rows.to(device), valid.to(device)
            position = torch.where(valid, offset, width).to(device)  # (B, L)
            split = torch.where(valid_d, meta.split_id[rows_d], -1)
            mode = torch.where(valid_d, meta.mode[rows_d], int(SplitMode.CAUSAL))
            allowed = may_attend(
                position[:, :, None], position[:, None, :], 0, 0,  # one sample per batch row
                split[:, :, None], split[:, None, :], mode[:, :, None], mode[:, None, :],
            )  # (B, L, L)
            zero, minus_inf = (torch.tensor(x, dtype=dtype, device=device) for x in (0.0, -torch.inf))
            mask = torch.where(allowed, zero, minus_inf)
            index.append(rows.flatten())
            batches.append(tuple(rows.shape))
            masks.append(mask[:, None])  # (B, 1, L, L): the same for every head
            key = torch.arange(width, device=device)
            reach = torch.where(allowed, key, -1).amax(dim=(0, 2)).tolist()  # (L,): last key a slot sees
            c = SDPA_QUERY_CHUNK
            chunks.append([(a, min(c, width - a), max(reach[a : a + c]) + 1) for a in range(0, width, c)])
        return cls(torch.cat(index).to(device), batches, masks, unpad.to(device), chunks)


def sdpa_layout(meta: PackedAttentionMeta, dtype: torch.dtype) -> SdpaLayout:
    """The pack's samples batched for ``sdpa`` with additive masks of ``dtype`` (cached on ``meta``)."""
    return meta.cached(("sdpa", dtype), lambda: SdpaLayout.build(meta, dtype))


# A pack whose samples hold at most this many (query, key) pairs gets its ``sdpa`` masks built when it is
# collated (``prepared_meta``): any pack of the CPU recipes' 2,048 tokens; 20 MiB of float32 masks at most
# (16 MiB and the padding slack).
PREPARED_MASK_PAIRS = 2048 * 2048


def prepared_meta(
    sample_lens: list[int], split_lens: list[int], split_modes: list[str]
) -> PackedAttentionMeta:
    """A pack's metadata (on the CPU) with its ``sdpa`` layout and float32 masks already built.

    Called by ``TrajectoryPacker.collate``, which runs in a DataLoader worker: the rule over every pair of
    tokens of a sample (5-14 ms for four multi-turn samples on the 2-core VM) is then the worker's work,
    not the training step's, and the batch carries the masks (``PackedBatch.attention``). Packs larger than
    ``PREPARED_MASK_PAIRS`` pairs (a GPU pack, which attends with ``flex`` or ``triton``) carry the
    metadata only: their masks would be large to ship between processes and are not what they use.
    """
    meta = PackedAttentionMeta.from_splits(sample_lens, split_lens, split_modes)
    if sum(n * n for n in sample_lens) <= PREPARED_MASK_PAIRS:
        sdpa_layout(meta, torch.float32)
    return meta


def _sdpa(q, k, v, meta, scale):
    layout = sdpa_layout(meta, q.dtype)
    sizes = [b * n for b, n in layout.batches]
    # One gather per tensor for all batches (its backward is one scatter, not one pack-sized gradient per
    # sample), then (B, L, H, D) views of it. `index_select` is the CPU's faster gather (and scatter-add).
    q_b, k_b, v_b = (x.index_select(0, layout.index).split(sizes) for x in (q, k, v))
    outs = []
    batches = zip(layout.batches, layout.masks, layout.chunks, q_b, k_b, v_b, strict=True)
    for (b, n), mask, chunks, qi, ki, vi in batches:
        qi = qi.view(b, n, *q.shape[1:]).transpose(1, 2)  # (B, H, L, D)
        ki = ki.view(b, n, *k.shape[1:]).transpose(1, 2)  # (B, Hkv, L, D)
        vi = vi.view(b, n, *v.shape[1:]).transpose(1, 2)
        if len(chunks) == 1:
            out = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, scale=scale, enable_gqa=True)
        else:  # `split` for the query chunks: its backward is one concatenation
            q_chunks = qi.split([rows for _, rows, _ in chunks], dim=2)  # (B, H, rows, D) each
            out = torch.cat([
                F.scaled_dot_product_attention(
                    q_chunk,
                    ki[:, :, :keys],  # (B, Hkv, keys, D)
                    vi[:, :, :keys],
                    attn_mask=mask[:, :, start : start + rows, :keys],  # (B, 1, rows, keys)
                    scale=scale,
                    enable_gqa=True,
                )
                for q_chunk, (start, rows, keys) in zip(q_chunks, chunks, strict=True)
            ], dim=2)  # (B, H, L, D)
        outs.append(out.transpose(1, 2).reshape(b * n, *q.shape[1:]))  # (B*L, H, D)
    return (outs[0] if len(outs) == 1 else torch.cat(outs)).index_select(0, layout.unpad)  # (T, H, D)


FLEX_BLOCK_SIZE = 128  # FlexAttention's default; BAGEL builds its block masks with the same size


def flex_block_mask(meta: PackedAttentionMeta):
    """FlexAttention's BlockMask for the pack (computed once per pack, reused by every layer)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return meta.may_attend(q_idx, kv_idx)

    T = meta.num_tokens
    return meta.cached(
        ("flex", FLEX_BLOCK_SIZE),
        lambda: create_block_mask(mask_mod, None, None, T, T, device=meta.device, BLOCK_SIZE=FLEX_BLOCK_SIZE),
    )


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(q, k, v, meta, scale):
    from torch.nn.attention.flex_attention import flex_attention

    # Eager FlexAttention materialises scores; only the compiled form is fast. On CPU the compile
    # costs ~40 s and there is no backward anyway, so CPU stays eager (tests, parity checks).
    attend = _compiled_flex_attention() if q.is_cuda else flex_attention
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        out = attend(
            q.transpose(0, 1)[None],
            k.transpose(0, 1)[None],
            v.transpose(0, 1)[None],
            block_mask=flex_block_mask(meta),
            scale=scale,
            enable_gqa=True,
        )
    return out[0].transpose(0, 1)
