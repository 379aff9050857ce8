"""The FLUX autoencoder in the `ae.safetensors` layout: images in [-1, 1] <-> scaled 16-channel latents.

Encoder: `conv_in`, then per resolution level `down.{i}.block.{j}` residual blocks and (except on the last
level) `down.{i}.downsample` (asymmetric pad + stride-2 conv), a `mid` of block / single-head attention /
block, then `norm_out`, swish, `conv_out` to 2 * z_channels (posterior mean and log-variance).
Decoder mirrors it with one more residual block per level, `up.{i}.upsample` (nearest x2 + conv) on every
level but the first, and `up` indexed by resolution level (level 0 = full resolution, run last).

`encode` *samples* the posterior (BAGEL does so both in training and for context images at inference) and
returns `scale * (z - shift)`; `decode` inverts the affine map before the decoder. GroupNorm's group count
is a config field so that a narrow tiny config keeps the same class and key layout.

Shapes: B = images, c = channels at a level, Z = z_channels, (H, W) image size, (h, w) = (H, W) / downsample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdgen.models.bagel.config import AutoEncoderConfig


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=num_groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_groups: int) -> None:
        """norm -> swish -> conv, twice, plus a 1x1 `nin_shortcut` when the width changes.

        Args:
            in_channels: input channels.
            out_channels: output channels.
            num_groups: GroupNorm groups.
        """
        super().__init__()
        self.norm1 = group_norm(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, num_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    def __init__(self, channels: int, num_groups: int) -> None:
        """Single-head self-attention over all pixels, with 1x1-conv projections.

        Args:
            channels: c.
            num_groups: GroupNorm groups.
        """
        super().__init__()
        self.norm = group_norm(channels, num_groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, h*w, c)
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        """Halves the resolution: pad one pixel right and bottom, then a stride-2 3x3 conv.

        Args:
            channels: c.
        """
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        """Doubles the resolution: nearest-neighbour x2, then a 3x3 conv.

        Args:
            channels: c.
        """
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: `block` (residual blocks) and an optional `downsample` / `upsample`."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, resample_name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        resample = getattr(self, self.resample_name, None)
        return x if resample is None else resample(x)


class Mid(nn.Module):
    def __init__(self, channels: int, num_groups: int) -> None:
        """block_1 -> attn_1 -> block_2 at the lowest resolution.

        Args:
            channels: c.
            num_groups: GroupNorm groups.
        """
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, num_groups)
        self.attn_1 = AttnBlock(channels, num_groups)
        self.block_2 = ResnetBlock(channels, channels, num_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, config: AutoEncoderConfig) -> None:
        """Image (B, 3, H, W) -> posterior parameters (B, 2Z, h, w).

        Args:
            config: autoencoder config.
        """
        super().__init__()
        g = config.num_groups
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        levels, width = [], config.ch
        for i, mult in enumerate(config.ch_mult):
            out = config.ch * mult
            blocks = [ResnetBlock(width if j == 0 else out, out, g) for j in range(config.num_res_blocks)]
            width = out
            last = i == len(config.ch_mult) - 1
            levels.append(Level(blocks, None if last else Downsample(width), "downsample"))
        self.down = nn.ModuleList(levels)
        self.mid = Mid(width, g)
        self.norm_out = group_norm(width, g)
        self.conv_out = nn.Conv2d(width, 2 * config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, config: AutoEncoderConfig) -> None:
        """Latent (B, Z, h, w) -> image (B, 3, H, W).

        Args:
            config: autoencoder config.
        """
        super().__init__()
        g = config.num_groups
        width = config.ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, width, 3, padding=1)
        self.mid = Mid(width, g)
        levels: list[Level] = []
        # Built from the lowest resolution up, stored by level index (up.0 = full resolution).
        for i in reversed(range(len(config.ch_mult))):
            out = config.ch * config.ch_mult[i]
            blocks = [ResnetBlock(width if j == 0 else out, out, g) for j in range(config.num_res_blocks + 1)]
            width = out
            levels.insert(0, Level(blocks, None if i == 0 else Upsample(width), "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(width, g)
        self.conv_out = nn.Conv2d(width, config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class AutoEncoder(nn.Module):
    def __init__(self, config: AutoEncoderConfig) -> None:
        """FLUX autoencoder.

        Args:
            config: autoencoder config (`AutoEncoderConfig()` is FLUX's).
        """
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(
        self, images: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1], H and W multiples of `downsample` -> latents (B, Z, h, w).

        Args:
            images: input images.
            sample: draw from the posterior (BAGEL's behaviour); False returns its mean.
            generator: random source for the posterior sample.
        """
        if images.shape[-2] % self.config.downsample or images.shape[-1] % self.config.downsample:
            raise ValueError(
                f"AutoEncoder.encode: image size {tuple(images.shape[-2:])} is not a multiple of "
                f"{self.config.downsample}"
            )
        mean, logvar = self.encoder(images).chunk(2, dim=1)  # (B, Z, h, w) each
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * noise
        return self.config.scale_factor * (z - self.config.shift_factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, Z, h, w) -> images (B, 3, H, W), roughly in [-1, 1]."""
        return self.decoder(latents / self.config.scale_factor + self.config.shift_factor)
