"""Qwen2 Mixture-of-Transformers: BAGEL's language model, with an understanding and a generation expert.

Every decoder layer holds two copies of everything that touches a token on its own: the input and
post-attention RMSNorms, the q/k/v/o projections, the per-head q/k RMSNorms and the SwiGLU MLP. The
un-suffixed copy is the *understanding* expert (text tokens, image markers, ViT tokens); the `*_moe_gen`
copy is the *generation* expert (VAE latent tokens, noised or clean). Routing is hard and by token type,
there is no router: `ExpertRoute` is built once per forward from a boolean `gen_mask`.
Attention itself is one joint softmax over all tokens: q/k/v are projected per expert, then attended together.
Between attentions the residual stream stays split by expert (`Streams`: each expert's rows, in pack order),
so a layer gathers and scatters rows only around the joint attention, not around each per-expert module.

Order inside a layer (as in BAGEL): split RMSNorm -> split q/k/v -> split q/k norm -> RoPE -> joint
attention -> split o_proj -> residual -> split RMSNorm -> split MLP -> residual. The final norm is split too.

The attention kernel is not fixed here: `Qwen2MoTModel.forward` takes an `attend(layer_index, q, k, v)`
callable, so the packed training path (`pdgen.models.attention.packed_attention`) and the KV-cached
inference path (`pdgen.models.bagel.cache`) share every other line.

State-dict names follow the release (`language_model.model.layers.{i}.self_attn.q_proj_moe_gen.weight`, ...);
RoPE's `inv_freq` is a non-persistent buffer, as in Hugging Face Qwen2, so it is not in a checkpoint.

Shapes: T = tokens in the (packed) sequence, N_und / N_gen = its rows of each expert (N_* either),
C = hidden size, H / Hkv = query / key-value heads, D = head dim, F = MLP inner size, V = vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from pdgen.models.bagel.config import LLMConfig

# attend(layer_index, q (T, H, D), k (T, Hkv, D), v (T, Hkv, D)) -> (T, H, D)
AttendFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Streams(NamedTuple):
    """Something per expert: the understanding rows and the generation rows of a (T, ...) tensor, each in
    pack order (or, for RoPE tables, each expert's (cos, signed sin))."""

    und: Any
    gen: Any


@dataclass(frozen=True)
class ExpertRoute:
    """Which rows of a (T, ...) tensor go to which expert.

    The decoder splits its input once (`split`), runs every expert-owned module on its own rows, and merges
    only where the experts meet: q/k/v before the joint attention (`merge`), the attention output after it
    (`split`), and the final hidden states. A layer thus routes twice instead of gathering and scattering
    around each of its nine per-expert modules.

    Both directions are one gather of the whole tensor in expert order (understanding rows, then generation
    rows) and a split or concatenation of its two parts: the backward of a split is one concatenation and
    that of a concatenation two views, where a gather per expert (or a scatter per expert) would add a
    pack-sized zero gradient and a sum, or a copy of the pack, per routing.

    Attributes:
        num_tokens: T.
        und: (N_und,) long, rows for the understanding expert.
        gen: (N_gen,) long, rows for the generation expert.
        order: (T,) long, `und` then `gen`: the pack row of each row in expert order (None when one expert
            takes every row: there is nothing to reorder, and a decoded token skips building it).
        inverse: (T,) long, the row in expert order of each pack row (None likewise).
    """

    num_tokens: int
    und: torch.Tensor
    gen: torch.Tensor
    order: torch.Tensor | None = None
    inverse: torch.Tensor | None = None

    @classmethod
    def from_gen_mask(cls, gen_mask: torch.Tensor) -> ExpertRoute:
        """`gen_mask` (T,) bool: True where the token is a VAE latent token."""
        und, gen = torch.nonzero(~gen_mask).flatten(), torch.nonzero(gen_mask).flatten()
        if not (und.numel() and gen.numel()):
            return cls(num_tokens=gen_mask.numel(), und=und, gen=gen)
        order = torch.cat([und, gen])
        rows = torch.arange(order.numel(), device=order.device)
        inverse = torch.empty_like(order).index_copy_(0, order, rows)
        return cls(num_tokens=gen_mask.numel(), und=und, gen=gen, order=order, inverse=inverse)

    @property
    def understanding_only(self) -> bool:
        """Every token takes the understanding expert (a text block at inference)."""
        return self.gen.numel() == 0

    def split(self, x: torch.Tensor) -> Streams:
        """(T, ...) -> its understanding rows (N_und, ...) and generation rows (N_gen, ...)."""
        # One expert for the whole sequence: views, nothing is gathered.
        if self.understanding_only:
            return Streams(x, x[:0])
        if self.und.numel() == 0:
            return Streams(x[:0], x)
        # `index_select`, not `x[rows]`: on the CPU it is the faster gather, and so is its backward (one
        # scatter-add, where advanced indexing's backward is an accumulating `index_put_`).
        und, gen = x.index_select(0, self.order).split([self.und.numel(), self.gen.numel()])
        return Streams(und, gen)

    def merge(self, x: Streams) -> torch.Tensor:
        """The inverse of `split`: per-expert rows back into one (T, ...) tensor in pack order."""
        if self.understanding_only:
            return x.und
        if self.und.numel() == 0:
            return x.gen
        return torch.cat([x.und, x.gen]).index_select(0, self.inverse)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`x` over its root mean square (last dimension, in float32, as Qwen2 computes it), times `weight`."""
    if x.dtype == torch.float32:
        # The same arithmetic without the two no-op casts: a one-token decode pass runs 17 norms,
        # and each dispatched op costs about as much as the norm's arithmetic at that size.
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        """Root-mean-square norm over the last dimension, computed in float32 (as Qwen2 does).

        Args:
            dim: normalised dimension.
            eps: added to the mean square.
        """
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float) -> None:
        """1-D RoPE (not M-RoPE): rotates channel pairs (i, i + D/2) by `position * theta^(-2i/D)`.

        Args:
            head_dim: D.
            theta: base period.
        """
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.register_buffer("inv_freq", torch.empty(head_dim // 2), persistent=False)
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | None = None) -> None:
        """(Re)computes `inv_freq` on `device`: it is derived, never loaded."""
        device = self.inv_freq.device if device is None else torch.device(device)
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim
        self.inv_freq = 1.0 / self.theta**exponents

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(T,) positions -> cos and *signed* sin, each (T, 1, D), broadcastable over heads.

        The signed sin is (-sin, sin) over the two halves of D, so that `apply_rope` rotates with a roll.
        """
        angles = position_ids.float()[:, None] * self.inv_freq[None, :]  # (T, D/2)
        angles = torch.cat([angles, angles], dim=-1)[:, None, :]  # (T, 1, D)
        # cos/sin of the duplicated angles, as Hugging Face Qwen2 computes them (an elementwise kernel may
        # round a vector tail differently from its body, so the tensor's layout is kept); negating half
        # of the sin afterwards is exact.
        sin = angles.sin()
        signed_sin = torch.cat([-sin[..., : self.head_dim // 2], sin[..., self.head_dim // 2 :]], dim=-1)
        return angles.cos().to(dtype), signed_sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x (T, H, D) rotated by RoPE tables cos and signed sin (T, 1, D), from `RotaryEmbedding`.

    Qwen2's ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = (-x2, x1)``: rolling x by D/2
    gives (x2, x1) and the signed sin carries the minus, so the products are the same numbers, bit for
    bit (forward and backward), in one op instead of the four of chunk, negate and concatenate; a
    one-token pass rotates 8 tensors.
    """
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        """Qwen2's MLP: `down(silu(gate(x)) * up(x))`, no biases.

        Args:
            hidden_size: C.
            intermediate_size: F.
        """
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoTAttention(nn.Module):
    def __init__(self, config: LLMConfig, layer_index: int) -> None:
        """Self-attention with per-expert projections and q/k norms, attended jointly.

        Args:
            config: language model config.
            layer_index: position of the layer (handed to `attend`, e.g. to pick a KV cache slot).
        """
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        c, d = config.hidden_size, config.head_dim
        for suffix in ("", "_moe_gen"):
            setattr(self, f"q_proj{suffix}", nn.Linear(c, config.num_heads * d, bias=True))
            setattr(self, f"k_proj{suffix}", nn.Linear(c, config.num_kv_heads * d, bias=True))
            setattr(self, f"v_proj{suffix}", nn.Linear(c, config.num_kv_heads * d, bias=True))
            setattr(self, f"o_proj{suffix}", nn.Linear(config.num_heads * d, c, bias=False))
            norm = (lambda: RMSNorm(d, config.rms_norm_eps)) if config.qk_norm else nn.Identity
            setattr(self, f"q_norm{suffix}", norm())
            setattr(self, f"k_norm{suffix}", norm())

    def forward(self, h: Streams, route: ExpertRoute, rope: Streams, attend: AttendFn) -> Streams:
        """Attention of normed hidden states, each expert's rows (N_und, C) and (N_gen, C) apart.

        Each expert projects, norms and rotates its own rows; the two are merged once, as one
        (T, (H + 2 Hkv) * D) tensor, for the joint attention, whose output is split once for `o_proj`.
        """
        qkv = route.merge(
            Streams(self._qkv(h.und, rope.und, ""), self._qkv(h.gen, rope.gen, "_moe_gen"))
        )  # (T, (H + 2 Hkv) * D)
        t, d, h, h_kv = qkv.shape[0], self.head_dim, self.num_heads, self.num_kv_heads
        # `split`, not three slices: its backward is one concatenation, where each slice's would be a
        # zero-filled (T, (H + 2 Hkv) * D) gradient, and their sum.
        q, k, v = qkv.split([h * d, h_kv * d, h_kv * d], dim=1)
        q, k, v = q.view(t, h, d), k.view(t, h_kv, d), v.view(t, h_kv, d)  # (T, H, D), (T, Hkv, D) x 2
        out = route.split(attend(self.layer_index, q, k, v).reshape(t, h * d))  # (N_*, H*D)
        return Streams(self.o_proj(out.und), self.o_proj_moe_gen(out.gen))  # (N_*, C)

    def _qkv(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], suffix: str) -> torch.Tensor:
        """One expert's rows (N, C) -> normed, rotated queries and keys and the values, side by side."""
        n, d = h.shape[0], self.head_dim
        q = getattr(self, f"q_proj{suffix}")(h).view(n, self.num_heads, d)  # (N, H, D)
        k = getattr(self, f"k_proj{suffix}")(h).view(n, self.num_kv_heads, d)  # (N, Hkv, D)
        v = getattr(self, f"v_proj{suffix}")(h)  # (N, Hkv*D)
        q = apply_rope(getattr(self, f"q_norm{suffix}")(q), *rope)
        k = apply_rope(getattr(self, f"k_norm{suffix}")(k), *rope)
        return torch.cat([q.flatten(1), k.flatten(1), v], dim=1)  # (N, (H + 2 Hkv) * D)

    def forward_understanding(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], attend: AttendFn
    ) -> torch.Tensor:
        """`forward` for a block whose every token takes the understanding expert: the same numbers.

        A text token decoded at inference is dispatch-bound on a small trunk (a few hundred tiny ops, each
        costing more than its arithmetic), so this path skips the routing and norms and rotates q and k
        together as one (T, H+Hkv, D) tensor: the same per-row arithmetic in fewer ops. The projections
        stay module calls, so that LoRA adapters and quantized layers apply. The keys and queries handed
        to `attend` are views.
        """
        t, h, d = x.shape[0], self.num_heads, self.head_dim
        q = self.q_proj(x).view(t, h, d)  # (T, H, D)
        k = self.k_proj(x).view(t, self.num_kv_heads, d)  # (T, Hkv, D)
        v = self.v_proj(x).view(t, self.num_kv_heads, d)  # (T, Hkv, D)
        qk = torch.cat([q, k], dim=1)  # (T, H+Hkv, D)
        if isinstance(self.q_norm, RMSNorm):
            weight = torch.cat([self.q_norm.weight.expand(h, d), self.k_norm.weight.expand(k.shape[1], d)])
            qk = rms_norm(qk, weight, self.q_norm.eps)  # (H+Hkv, D) weight: each row its head's norm
        qk = apply_rope(qk, *rope)
        out = attend(self.layer_index, qk[:, :h], qk[:, h:], v).reshape(t, h * d)  # (T, H*D)
        return self.o_proj(out)  # (T, C)


class MoTDecoderLayer(nn.Module):
    def __init__(self, config: LLMConfig, layer_index: int) -> None:
        """One pre-norm decoder layer with an understanding and a generation expert.

        Args:
            config: language model config.
            layer_index: position of the layer in the stack.
        """
        super().__init__()
        c, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(c, eps)
        self.input_layernorm_moe_gen = RMSNorm(c, eps)
        self.self_attn = MoTAttention(config, layer_index)
        self.post_attention_layernorm = RMSNorm(c, eps)
        self.post_attention_layernorm_moe_gen = RMSNorm(c, eps)
        self.mlp = SwiGLU(c, config.intermediate_size)
        self.mlp_moe_gen = SwiGLU(c, config.intermediate_size)

    def forward(self, x: Streams, route: ExpertRoute, rope: Streams, attend: AttendFn) -> Streams:
        """The residual stream, each expert's rows apart (see `ExpertRoute`); RoPE tables split likewise."""
        if route.understanding_only:
            return Streams(self._forward_understanding(x.und, rope.und, attend), x.gen)
        h = Streams(self.input_layernorm(x.und), self.input_layernorm_moe_gen(x.gen))
        attn = self.self_attn(h, route, rope, attend)
        x = Streams(x.und + attn.und, x.gen + attn.gen)
        h = Streams(self.post_attention_layernorm(x.und), self.post_attention_layernorm_moe_gen(x.gen))
        return Streams(x.und + self.mlp(h.und), x.gen + self.mlp_moe_gen(h.gen))  # (N_*, C)

    def _forward_understanding(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], attend: AttendFn
    ) -> torch.Tensor:
        """`forward` of a block with no VAE token, in fewer ops (`MoTAttention.forward_understanding`).

        Called from `forward`, so the layer's own hooks (FSDP's unsharding) still run around it.
        """
        x = x + self.self_attn.forward_understanding(self.input_layernorm(x), rope, attend)
        return x + self.mlp(self.post_attention_layernorm(x))  # (T, C)


class Qwen2MoTModel(nn.Module):
    def __init__(self, config: LLMConfig) -> None:
        """Embedding, decoder stack and split final norm.

        Args:
            config: language model config.
        """
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.norm_moe_gen = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)
        # Recompute each layer's activations in backward (set by the training module for large models).
        self.gradient_checkpointing = False

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        gen_mask: torch.Tensor,
        attend: AttendFn,
    ) -> torch.Tensor:
        """Runs the decoder stack on already embedded tokens.

        Args:
            inputs_embeds: (T, C) token embeddings (text, ViT and VAE tokens already placed).
            position_ids: (T,) RoPE positions.
            gen_mask: (T,) bool, True for tokens of the generation expert (VAE latent tokens).
            attend: attention over the sequence, see `AttendFn`.

        Returns:
            (T, C) hidden states after the split final norm.
        """
        route = ExpertRoute.from_gen_mask(gen_mask)
        cos, sin = (route.split(table) for table in self.rotary_emb(position_ids, inputs_embeds.dtype))
        rope = Streams((cos.und, sin.und), (cos.gen, sin.gen))
        x = route.split(inputs_embeds)
        for layer in self.layers:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, route, rope, attend, use_reentrant=False)
            else:
                x = layer(x, route, rope, attend)
        return route.merge(Streams(self.norm(x.und), self.norm_moe_gen(x.gen)))


class Qwen2MoTForCausalLM(nn.Module):
    def __init__(self, config: LLMConfig) -> None:
        """The language model and its (untied) LM head.

        Args:
            config: language model config.
        """
        super().__init__()
        self.model = Qwen2MoTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def copy_und_to_gen(self) -> None:
        """Sets every `*_moe_gen` weight to its understanding twin (BAGEL's `init_moe`)."""
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, param in params.items():
                if "_moe_gen" in name:
                    param.copy_(params[name.replace("_moe_gen", "")])
