"""BAGEL's packed attention mask rule, written once: a leaf module that whatever applies the rule imports.

A pack concatenates many trajectories (samples). Each sample is a run of *splits*: a text segment
(mode ``causal``), a clean image (``full``: bidirectional inside the image) or a noised image that is
being denoised (``noise``: bidirectional inside, invisible to everything else). The rule, from
BAGEL's ``prepare_attention_mask_per_sample``:

    query q may attend key k  iff  same sample
                              and (k <= q  or  (same split and that split is full or noise))
                              and not (k is in a noise split other than q's)

``may_attend`` is that sentence as an expression over per-token metadata; ``PackedAttentionMeta`` holds
the metadata of one pack. Nothing here runs attention: ``pdgen.models.attention`` (``sdpa``, ``flex``)
and ``pdgen.kernels.packed_attention`` (``triton``) consume the rule, and ``pdgen.data.packing`` builds
the metadata, as attention-gym keeps its masks as small predicates apart from what runs them.

Shapes: T packed tokens.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import IntEnum

import torch


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
        """The metadata on ``device``: itself (with what it has cached) where it is there already."""
        if torch.device(device) == self.device:
            return self
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

    def cached(self, key: tuple, build):
        """Memoise a structure derived from this pack (each implementation keeps its own under its key)."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]
