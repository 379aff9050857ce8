"""BAGEL's small embedding modules, derived from the math: flow-time embedder, 2-D sin-cos, connector.

- `TimestepEmbedder`: flow time t in [0, 1] (raw, *not* scaled by 1000) -> 256-d sinusoid in
  **[cos, sin]** order -> Linear -> SiLU -> Linear. Keys `mlp.0`, `mlp.2`.
- `PositionEmbedding`: a fixed 2-D sin-cos table over a `side x side` grid, looked up by the flattened id
  `row * side + col`. The table is a persistent buffer named `pos_embed` (so it appears in a checkpoint), but
  it is always recomputed, never loaded: BAGEL's own loader drops it too.
- `MLPConnector`: ViT width -> LLM width, Linear -> tanh-GELU -> Linear. Keys `fc1`, `fc2`.

The 2-D table: with `D` channels, the first `D/2` channels encode the **column** coordinate and the last
`D/2` the **row** coordinate; each half is `[sin(pos * w_i), cos(pos * w_i)]` with
`w_i = 10000^(-i / (D/4))`, `i = 0 .. D/4 - 1`.

Shapes: N = tokens looked up, C = LLM hidden size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TIMESTEP_FREQUENCY_DIM = 256
TIMESTEP_MAX_PERIOD = 10000.0


def timestep_sinusoid(t: torch.Tensor, dim: int = TIMESTEP_FREQUENCY_DIM) -> torch.Tensor:
    """Sinusoidal features of flow times, `[cos(t * f_i), sin(t * f_i)]` with `f_i = 10000^(-i / (dim/2))`.

    Args:
        t: (N,) flow times in [0, 1].
        dim: feature size (even).

    Returns:
        (N, dim) float32 features.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(TIMESTEP_MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angles = t.float()[:, None] * freqs[None, :]  # (N, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        """Flow-time embedding added to every VAE token.

        Args:
            hidden_size: LLM hidden size C.
        """
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(TIMESTEP_FREQUENCY_DIM, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_sinusoid(t).to(self.mlp[0].weight.dtype)  # (N, 256)
        return self.mlp(features)  # (N, C)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) positions -> (N, dim) `[sin(pos * w_i), cos(pos * w_i)]`, computed in float64."""
    omega = 1.0 / 10000.0 ** (
        torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2)
    )
    angles = positions.double()[:, None] * omega[None, :]  # (N, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def sincos_2d(dim: int, side: int, device: torch.device | None = None) -> torch.Tensor:
    """(side*side, dim) table; row `r*side + c` = [sincos(c) | sincos(r)], each half `dim/2` wide."""
    rows, cols = torch.meshgrid(
        torch.arange(side, device=device), torch.arange(side, device=device), indexing="ij"
    )  # (side, side) each
    return torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=-1)


class PositionEmbedding(nn.Module):
    def __init__(self, max_side: int, hidden_size: int) -> None:
        """Fixed 2-D sin-cos position table over a `max_side x max_side` grid.

        Args:
            max_side: grid side (`max_latent_size` for latents, patches per side for the ViT).
            hidden_size: channels C; must be divisible by 4.
        """
        super().__init__()
        if hidden_size % 4:
            raise ValueError(f"PositionEmbedding: hidden_size={hidden_size} must be divisible by 4")
        self.max_side = max_side
        self.hidden_size = hidden_size
        self.register_buffer("pos_embed", torch.empty(max_side * max_side, hidden_size), persistent=True)
        self.reset_buffers()

    def reset_buffers(self, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        """(Re)computes the table on `device` in `dtype` (defaults: where and what it is now)."""
        device = self.pos_embed.device if device is None else torch.device(device)
        dtype = self.pos_embed.dtype if dtype is None else dtype
        if device.type == "meta":
            self.pos_embed = torch.empty(self.max_side**2, self.hidden_size, device=device, dtype=dtype)
        else:
            self.pos_embed = sincos_2d(self.hidden_size, self.max_side, device).to(dtype)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.pos_embed[position_ids]  # (N, C)


class MLPConnector(nn.Module):
    def __init__(self, in_features: int, hidden_size: int) -> None:
        """Maps ViT features into the LLM's width.

        Args:
            in_features: ViT hidden size.
            hidden_size: LLM hidden size C.
        """
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_size)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
