"""KV cache for inference: a query block attends to everything cached before it plus itself.

At inference BAGEL grows one sequence piece by piece (§5 of the reference notes): a text prompt,
a context image (clean VAE tokens and/or ViT tokens), generated text token by token, then an image
denoised as one block. Each piece is a *query block* that sees the whole cache and, within itself,

- causally (`causal=True`) for text, so prefilling a prompt equals decoding it token by token;
- bidirectionally (`causal=False`) for an image block (markers + latent or ViT tokens).

Blocks that must stay out of the context (the noisy latents while denoising) are run with
`update=False`; everything else is appended. Keys are cached *after* RoPE, so a cached key never needs
its position again, and head-major, (Hkv, L, D): the layout SDPA reads fastest (a fifth faster over 300
cached tokens than a token-major view). One `KVCache` holds one sequence; classifier-free guidance keeps
one cache per context and `copy()` forks a context cheaply (appends build new tensors, the old ones are
shared).
This is pure PyTorch SDPA (an additive mask where one is needed): no flash_attn, runs on CPU.

Shapes: Q = tokens of the query block, L = cached tokens, H / Hkv = query / key-value heads, D = head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pdgen.models.bagel.qwen2_mot import AttendFn


def causal_mask(n_q: int, n_past: int, group: int, like: torch.Tensor) -> torch.Tensor:
    """(G*Q, L+Q) additive mask of a causal block of Q tokens after L cached ones, in `block_attention`'s
    stacked row order (row g*Q + i is query i of the g-th head of a group), of `like`'s dtype and device.

    A block's mask is the same at every layer, so the cache builds it once per pass (building it costs
    about as much as the attention of a few decoded tokens); an additive float mask also spares SDPA the
    conversion of a boolean one at every call.
    """
    mask = torch.full((n_q, n_past + n_q), -torch.inf, dtype=like.dtype, device=like.device)
    return mask.triu(n_past + 1).repeat(group, 1)  # 0 where query i may see key j <= L + i


def block_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    past_k: torch.Tensor,
    past_v: torch.Tensor,
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention of a query block over the cache and itself.

    Args:
        q: (Q, H, D) queries of the block.
        k: (Q, Hkv, D) keys of the block (after RoPE).
        v: (Q, Hkv, D) values of the block.
        past_k: (Hkv, L, D) cached keys.
        past_v: (Hkv, L, D) cached values.
        mask: `causal_mask` for a causal block (text) of several tokens; None for a block that sees all of
            itself (an image) and for a single token (which sees everything anyway).

    Returns:
        (Q, H, D) attention output, and the (Hkv, L+Q, D) keys and values it attended to (the cache
        after the block, so that a write does not concatenate twice).
    """
    n_q = q.shape[0]
    keys = torch.cat([past_k, k.transpose(0, 1)], dim=1)  # (Hkv, L+Q, D), contiguous
    values = torch.cat([past_v, v.transpose(0, 1)], dim=1)  # (Hkv, L+Q, D)
    # The G = H/Hkv query heads that share a key-value head are stacked into one (G*Q)-row query of that
    # head (row g*Q + i is query i of head g), so plain attention replaces `enable_gqa`, and the inputs get
    # a batch dimension: CPU SDPA serves 3-D inputs and `enable_gqa` only on its unfused math path, about
    # half as fast as its fused kernel at these sizes (e.g. 0.8 -> 0.4 ms for an image block over 250
    # cached tokens). The fused kernel sums in another order: outputs may differ in the last bit (about 1e-7).
    group = q.shape[1] // k.shape[1]
    q_grouped = q.transpose(0, 1).reshape(k.shape[1], group * n_q, q.shape[2])  # (Hkv, G*Q, D)
    out = F.scaled_dot_product_attention(q_grouped[None], keys[None], values[None], attn_mask=mask)[0]
    # (Hkv, G*Q, D)
    return out.view(q.shape[1], n_q, q.shape[2]).transpose(0, 1), keys, values  # (Q, H, D)


class KVCache:
    """Per-layer keys and values of one growing sequence."""

    def __init__(self, num_layers: int) -> None:
        """An empty cache.

        Args:
            num_layers: decoder layers of the model it serves.
        """
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def __len__(self) -> int:
        """Cached tokens L."""
        return 0 if self.keys[0] is None else self.keys[0].shape[1]

    def copy(self) -> KVCache:
        """A fork that can grow independently (tensors are shared, never written in place)."""
        fork = KVCache(len(self.keys))
        fork.keys, fork.values = list(self.keys), list(self.values)
        return fork

    def truncate(self, length: int) -> None:
        """Keeps the first `length` cached tokens (views: nothing is copied or written in place)."""
        if not 0 <= length <= len(self):
            raise ValueError(f"cannot truncate a KV cache of {len(self)} tokens to {length}")
        if length == len(self):
            return
        self.keys = [k[:, :length] for k in self.keys]
        self.values = [v[:, :length] for v in self.values]

    def attend_fn(self, causal: bool, update: bool) -> AttendFn:
        """`attend` for one query block: attends over the cache, appends the block if `update`."""
        mask: torch.Tensor | None = None  # a causal block's, built at the first layer for all of them

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            nonlocal mask
            past_k, past_v = self.keys[layer], self.values[layer]
            if past_k is None:
                past_k, past_v = k[:0].transpose(0, 1), v[:0].transpose(0, 1)  # (Hkv, 0, D)
            if causal and q.shape[0] > 1 and mask is None:
                mask = causal_mask(q.shape[0], past_k.shape[1], q.shape[1] // k.shape[1], q)
            out, keys, values = block_attention(q, k, v, past_k, past_v, mask)
            if update:
                self.keys[layer], self.values[layer] = keys, values
            return out

        return attend
