"""Rectified-flow pieces of BAGEL's generation objective: timestep sampling and shift, noising, target.

Conventions (BAGEL's, easy to get backwards):

- flow time t in [0, 1]: t = 0 is the clean latent x0, t = 1 pure noise eps; `x_t = (1 - t) x0 + t eps`;
- the model predicts the velocity **v = eps - x0** (pointing from data to noise), read at the noisy token
  itself; the sampler integrates t from 1 to 0 with `x <- x - v * (t_i - t_{i+1})`;
- training times are logit-normal (or uniform), one per noised image (split), then shifted:
  `t <- s t / (1 + (s - 1) t)`; s = 1 in pre-training, larger values push t toward noise;
- clean context images enter with t = 0 (still through `vae2llm` and the time embedder).

Shapes: N_vae = VAE tokens of a pack, P = latent patch dim (64).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from pdgen.models.mask import SplitMode

if TYPE_CHECKING:
    from pdgen.data.packing import PackedBatch

TimestepDistribution = Literal["logit_normal", "uniform"]


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """BAGEL's time shift `s t / (1 + (s - 1) t)`; identity for s = 1, keeps 0 and 1 fixed."""
    if shift <= 0:
        raise ValueError(f"timestep shift must be positive, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(
    batch: PackedBatch,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    distribution: TimestepDistribution = "logit_normal",
) -> torch.Tensor:
    """Flow times for every VAE token of a pack: one draw per `noise` split, 0 for clean tokens.

    Args:
        batch: the pack; its `split_lens`/`split_modes` say which splits are noised and
            `packed_vae_token_indexes` where the VAE tokens are.
        shift: timestep shift s (1.0 = the plain distribution).
        generator: random source.
        distribution: ``logit_normal`` (BAGEL's: sigmoid of a standard normal, few draws near 0 and 1) or
            ``uniform`` (the recipe docs/training.md measured a tiny flow model from scratch to
            learn with in minutes on a CPU).

    Returns:
        (N_vae,) float32 times, aligned with `batch.packed_vae_token_indexes`; assign it to
        `batch.packed_timesteps` before the forward pass.
    """
    noised = [i for i, mode in enumerate(batch.split_modes) if SplitMode.parse(mode) == SplitMode.NOISE]
    if distribution == "logit_normal":
        raw = torch.sigmoid(torch.randn(len(noised), generator=generator))
    elif distribution == "uniform":
        raw = torch.rand(len(noised), generator=generator)
    else:
        raise ValueError(f"timestep distribution {distribution!r}; expected 'logit_normal' or 'uniform'")
    per_split = torch.zeros(len(batch.split_lens))
    per_split[noised] = shift_timesteps(raw, shift)
    # Every token of a split takes its split's time; the VAE tokens' are read where they lie. The split
    # layout is host-side lists, so nothing waits on the device.
    vae_indexes = batch.packed_vae_token_indexes
    per_token = per_split.repeat_interleave(torch.tensor(batch.split_lens)).to(vae_indexes.device)  # (T,)
    return per_token[vae_indexes]


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`x_t = (1 - t) x0 + t eps` for x0, noise (N, P) and t (N,)."""
    t = t.to(x0.dtype)[:, None]  # (N, 1)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The regression target of `llm2vae`: `eps - x0` (N, P)."""
    return noise - x0


def inference_timesteps(num_steps: int, shift: float) -> torch.Tensor:
    """(num_steps,) times from 1 to 0, shifted; Euler takes `num_steps - 1` steps between them."""
    if num_steps < 2:
        raise ValueError(f"num_steps must be at least 2, got {num_steps}")
    return shift_timesteps(torch.linspace(1.0, 0.0, num_steps), shift)
