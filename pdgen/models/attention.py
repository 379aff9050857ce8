"""Attention over packed interleaved sequences: BAGEL's mask rule, written once, and its implementations.

A pack concatenates many trajectories (samples). Each sample is a run of *splits*: a text segment
(mode ``causal``), a clean image (``full``: bidirectional inside the image) or a noised image that is
being denoised (``noise``: bidirectional inside, invisible to everything else). The rule, from
BAGEL's ``prepare_attention_mask_per_sample``:

    query q may attend key k  iff  same sample
                              and (k <= q  or  (same split and that split is full or noise))
                              and not (k is in a noise split other than q's)

``may_attend`` is that sentence as an expression over per-token metadata. All implementations
consume the same function: ``sdpa`` broadcasts it into dense boolean masks, one per sample (the readable
reference, and the CPU training path), ``flex`` uses it as a FlexAttention ``mask_mod``, and ``triton``
(``pdgen/kernels/packed_attention.py``) compiles it into the kernel to mask the tiles it cannot skip.

Shapes: T packed tokens, H query heads, Hkv key/value heads (GQA: H % Hkv == 0), D head dim.
Tensors are in the packed "varlen" layout BAGEL uses: q (T, H, D), k and v (T, Hkv, D).
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

import torch
import torch.nn.functional as F

AttentionImpl = Literal["sdpa", "flex", "triton"]
IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "flex", "triton")


class SplitMode(IntEnum):
    """How the tokens of one split see each other (values are what the kernels compare against)."""

    CAUSAL = 0
    FULL = 1
    NOISE = 2

    @classmethod
    def parse(cls, name: str | SplitMode) -> SplitMode:
        if isinstance(name, SplitMode):
            return name
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown split mode {name!r}; expected one of causal, full, noise") from None


def may_attend(q_idx, k_idx, q_sample, k_sample, q_split, k_split, q_mode, k_mode):
    """BAGEL's rule for one (query, key) pair, broadcast over whatever shapes the arguments have.

    Only comparison and bitwise operators appear, so the same source serves torch tensors (``sdpa``,
    ``flex``) and Triton blocks (the kernel wraps this function with ``triton.jit``). Mode values are
    ``SplitMode``'s: 0 causal, 2 noise (literals, because Triton cannot read Python globals).
    """
    same_sample = q_sample == k_sample
    earlier_or_self = k_idx <= q_idx
    same_bidirectional_split = (q_split == k_split) & (q_mode != 0)
    foreign_noise = (k_mode == 2) & (k_split != q_split)
    return same_sample & (earlier_or_self | same_bidirectional_split) & (foreign_noise == 0)


@dataclass(frozen=True, eq=False)
class PackedAttentionMeta:
    """Per-token metadata of one pack: everything any implementation needs to apply the rule.

    Build it with ``from_splits``. Derived structures (the dense mask, FlexAttention's block mask, the
    Triton kernel's tile plan) are computed once per pack and cached here, so the 28 layers and all
    heads of a forward pass share them.
    """

    sample_id: torch.Tensor  # (T,) int32
    split_id: torch.Tensor  # (T,) int32, unique across the whole pack
    mode: torch.Tensor  # (T,) int32, a SplitMode per token
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_splits(
        cls,
        sample_lens: list[int],
        split_lens: list[int],
        split_modes: list[str | SplitMode],
        device: torch.device | str | None = None,
    ) -> PackedAttentionMeta:
        """Expand a pack's split layout into per-token metadata.

        Args:
            sample_lens: token count of each sample, in pack order.
            split_lens: token count of each split, in pack order; each sample is a whole number of splits.
            split_modes: ``causal``, ``full`` or ``noise`` for each split.
            device: where the metadata tensors live (the device of q, k, v).
        """
        if len(split_lens) != len(split_modes):
            raise ValueError(f"{len(split_lens)} split_lens but {len(split_modes)} split_modes")
        if any(n <= 0 for n in split_lens) or any(n <= 0 for n in sample_lens):
            raise ValueError(f"lengths must be positive: sample_lens={sample_lens}, split_lens={split_lens}")
        if sum(split_lens) != sum(sample_lens):
            raise ValueError(f"splits cover {sum(split_lens)} tokens but samples cover {sum(sample_lens)}")
        split_sample, sample, filled = [], 0, 0
        for i, n in enumerate(split_lens):
            split_sample.append(sample)
            filled += n
            if filled > sample_lens[sample]:
                raise ValueError(f"split {i} crosses the end of sample {sample} (sample_lens={sample_lens})")
            if filled == sample_lens[sample]:
                sample, filled = sample + 1, 0
        modes = [int(SplitMode.parse(m)) for m in split_modes]
        lens = torch.tensor(split_lens)
        as_tokens = functools.partial(torch.repeat_interleave, repeats=lens)
        return cls(
            sample_id=as_tokens(torch.tensor(split_sample, dtype=torch.int32)).to(device),
            split_id=as_tokens(torch.arange(len(split_lens), dtype=torch.int32)).to(device),
            mode=as_tokens(torch.tensor(modes, dtype=torch.int32)).to(device),
        )

    @property
    def num_tokens(self) -> int:
        return self.sample_id.numel()

    @property
    def device(self) -> torch.device:
        return self.sample_id.device

    def to(self, device: torch.device | str) -> PackedAttentionMeta:
        return PackedAttentionMeta(self.sample_id.to(device), self.split_id.to(device), self.mode.to(device))

    def may_attend(self, q_idx: torch.Tensor, k_idx: torch.Tensor) -> torch.Tensor:
        """The rule at token positions ``q_idx`` and ``k_idx`` (broadcastable index tensors)."""
        s, p, m = self.sample_id, self.split_id, self.mode
        return may_attend(q_idx, k_idx, s[q_idx], s[k_idx], p[q_idx], p[k_idx], m[q_idx], m[k_idx])

    def dense_mask(self) -> torch.Tensor:
        """(T, T) bool, True where the query row may attend the key column. O(T^2) memory."""
        if "dense" not in self._cache:
            idx = torch.arange(self.num_tokens, device=self.device)
            self._cache["dense"] = self.may_attend(idx[:, None], idx[None, :])
        return self._cache["dense"]

    def sample_lens(self) -> list[int]:
        """Tokens of each sample, in pack order."""
        return self.cached(
            ("sample_lens",), lambda: torch.unique_consecutive(self.sample_id, return_counts=True)[1].tolist()
        )

    def sdpa_layout(self, dtype: torch.dtype) -> SdpaLayout:
        """The samples batched for ``sdpa``, with additive masks of ``dtype`` (see ``SdpaLayout``)."""
        return self.cached(("sdpa", dtype), lambda: SdpaLayout.build(self, dtype))

    def cached(self, key: tuple, build):
        """Memoise a structure derived from this pack (used by the flex and triton implementations)."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


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

    Attributes:
        index: (sum B*L,) long, the pack row each batch slot reads (padding reads its sample's first row).
        batches: (B, L) of each batch, in ``index`` order.
        masks: per batch, (B, 1, L, L) additive mask (0 where allowed, -inf elsewhere).
        unpad: (T,) long, the slot of ``index`` that holds each pack row.
    """

    index: torch.Tensor
    batches: list[tuple[int, int]]
    masks: list[torch.Tensor]
    unpad: torch.Tensor

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
        index, unpad, batches, masks = [], torch.empty(meta.num_tokens, dtype=torch.long), [], []
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
        return cls(torch.cat(index).to(device), batches, masks, unpad.to(device))


def _sdpa(q, k, v, meta, scale):
    layout = meta.sdpa_layout(q.dtype)
    sizes = [b * n for b, n in layout.batches]
    # One gather per tensor for all batches (its backward is one scatter, not one pack-sized gradient per
    # sample), then (B, L, H, D) views of it. `index_select` is the CPU's faster gather (and scatter-add).
    q_b, k_b, v_b = (x.index_select(0, layout.index).split(sizes) for x in (q, k, v))
    outs = []
    for (b, n), mask, qi, ki, vi in zip(layout.batches, layout.masks, q_b, k_b, v_b, strict=True):
        out = F.scaled_dot_product_attention(
            qi.view(b, n, *q.shape[1:]).transpose(1, 2),  # (B, H, L, D)
            ki.view(b, n, *k.shape[1:]).transpose(1, 2),  # (B, Hkv, L, D)
            vi.view(b, n, *v.shape[1:]).transpose(1, 2),
            attn_mask=mask,  # (B, 1, L, L)
            scale=scale,
            enable_gqa=True,
        )  # (B, H, L, D)
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
