"""`PixelAutoEncoder`: the embedded default's lossless autoencoder, behind the FLUX autoencoder's interface.

Why it exists: the tiny preset's FLUX autoencoder is randomly initialised, so its latents mean nothing and its
decoder cannot draw. The shapes world needs no learned compression at 64 px, so the embedded default uses an
exact one instead: each d x d block of pixels is folded into the channels of one latent cell
(space-to-depth, 3 * d**2 values), then a fixed orthogonal channel map turns every pixel's RGB into an
opponent-colour basis (luminance, red-green, yellow-blue). Orthogonal means `decode(encode(x)) == x` to float
rounding and latent channels keep pixel scale, so unit-variance flow noise is the right size. Measured against
the alternative (a tiny FLUX-layout autoencoder trained on world images) in `docs/model.md`.

It is selected by `AutoEncoderConfig(kind="pixel", z_channels=3 * d**2)` and used by `BagelTrunk` exactly
like `AutoEncoder`: `encode(images, sample, generator)`, `decode(latents)`, `config`. The channel map is its
one (frozen) parameter, saved in `ae.safetensors` as `channel_map`, so a checkpoint names its own autoencoder.

Shapes: B = images, (H, W) image size, d = downsample, (h, w) = (H / d, W / d), Z = z_channels = 3 * d**2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pdgen.models.bagel.config import AutoEncoderConfig

# Rows: luminance, red-green, yellow-blue; orthonormal, so its inverse is its transpose.
OPPONENT_COLOUR = (
    (1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)),
    (1 / math.sqrt(2), -1 / math.sqrt(2), 0.0),
    (1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)),
)


class PixelAutoEncoder(nn.Module):
    def __init__(self, config: AutoEncoderConfig) -> None:
        """Lossless space-to-depth autoencoder.

        Args:
            config: an `AutoEncoderConfig` with `kind="pixel"`; `z_channels = 3 * downsample**2`.
        """
        super().__init__()
        if config.kind != "pixel":
            raise ValueError(
                f"PixelAutoEncoder needs AutoEncoderConfig(kind='pixel'), got kind={config.kind!r}"
            )
        self.config = config
        self.channel_map = nn.Parameter(
            torch.empty(config.z_channels, config.z_channels), requires_grad=False
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The opponent-colour transform applied to every pixel of a cell (block-diagonal over d*d pixels)."""
        colour = torch.tensor(OPPONENT_COLOUR)
        cells = self.config.downsample**2
        # Latent channel order is (colour, dy, dx), as `pixel_unshuffle` lays it out.
        self.channel_map.copy_(torch.kron(colour, torch.eye(cells)))

    def encode(
        self, images: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> latents (B, Z, h, w); deterministic.

        Args:
            images: input images, H and W multiples of `downsample`.
            sample: accepted for interface parity with `AutoEncoder.encode`; there is no posterior.
            generator: likewise unused.
        """
        d = self.config.downsample
        if images.shape[-2] % d or images.shape[-1] % d:
            raise ValueError(
                f"PixelAutoEncoder.encode: image size {tuple(images.shape[-2:])} is not a multiple of {d}"
            )
        cells = torch.nn.functional.pixel_unshuffle(images, d)  # (B, Z, h, w), channels (colour, dy, dx)
        return torch.einsum("zc,bchw->bzhw", self.channel_map.to(images.dtype), cells)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, Z, h, w) -> images (B, 3, h*d, w*d); exact inverse of `encode`."""
        cells = torch.einsum("zc,bzhw->bchw", self.channel_map.to(latents.dtype), latents)
        return torch.nn.functional.pixel_shuffle(cells, self.config.downsample)
