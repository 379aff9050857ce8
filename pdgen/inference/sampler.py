"""BAGEL's flow sampler: Euler steps over shifted timesteps, and classifier-free guidance with renorm.

The model's velocity points from data to noise (v = eps - x0, `pdgen.models.bagel.flow`), so sampling
integrates t from 1 (noise) to 0 (image)::

    t_i = shift(linspace(1, 0, N))_i,   shift(t) = s t / (1 + (s - 1) t)
    x  <-  x - v(x, t_i) (t_i - t_{i+1})          for i = 0 .. N-2

Guidance (reference notes §5.2) combines up to three velocities computed on the same noisy query against
three contexts: conditional ``v_c``, text-unconditional ``v_ut``, image-unconditional ``v_ui``::

    v_text = v_ut + s_text (v_c - v_ut)                      (text guidance on)
    v      = v_ui + s_img  (v_text - v_ui)                   (image guidance on)

Renorm keeps guidance from inflating the velocity: the guided result is scaled by
``clamp(|v_c| / |v|, renorm_min, 1)``. ``global`` takes the norms over the whole image (all tokens and
channels, so it is per image), ``channel`` per token over channels, and ``text_channel`` renorms
``v_text`` per token *before* image guidance and leaves the final result alone. Guidance is on only at
``lo < t <= hi`` of ``cfg_interval`` and for a scale above 1. One difference from BAGEL: BAGEL applies
image guidance only when text guidance is on too; here each is on by its own scale (with text guidance
off, ``v_text = v_c``, the natural extension).

Shapes: N = latent tokens of one image, P = latent patch dim (64).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pdgen.models.bagel.flow import inference_timesteps

RENORM_EPS = 1e-8  # keeps the renorm factor finite for a zero guided velocity


def guidance_on(t: float, scale: float, interval: tuple[float, float]) -> bool:
    """Whether a guidance term with `scale` applies at flow time `t` (``lo < t <= hi`` and scale > 1)."""
    return scale > 1.0 and interval[0] < t <= interval[1]


def renorm(v: torch.Tensor, reference: torch.Tensor, per_token: bool, minimum: float) -> torch.Tensor:
    """`v` (N, P) times ``clamp(|reference| / |v|, minimum, 1)``; norms per token or over the whole image."""
    if per_token:
        ratio = reference.norm(dim=-1, keepdim=True) / (v.norm(dim=-1, keepdim=True) + RENORM_EPS)  # (N, 1)
    else:
        ratio = reference.norm() / (v.norm() + RENORM_EPS)  # ()
    return v * ratio.clamp(min=minimum, max=1.0)


def guide(
    v_cond: torch.Tensor,
    v_text_uncond: torch.Tensor | None,
    v_image_uncond: torch.Tensor | None,
    text_scale: float,
    image_scale: float,
    renorm_type: str,
    renorm_min: float,
) -> torch.Tensor:
    """The guided velocity (N, P) from the three contexts' velocities (see the module docstring).

    Args:
        v_cond: (N, P) conditional velocity.
        v_text_uncond: (N, P) velocity without the text condition, or None when text guidance is off.
        v_image_uncond: (N, P) velocity without the image condition, or None when image guidance is off.
        text_scale: s_text.
        image_scale: s_img.
        renorm_type: ``global``, ``channel`` or ``text_channel``.
        renorm_min: lower clamp of the renorm factor.
    """
    if v_text_uncond is None and v_image_uncond is None:
        return v_cond
    v_text = v_cond if v_text_uncond is None else v_text_uncond + text_scale * (v_cond - v_text_uncond)
    if renorm_type == "text_channel":
        if v_text_uncond is not None:
            v_text = renorm(v_text, v_cond, per_token=True, minimum=renorm_min)
        if v_image_uncond is None:
            return v_text
        return v_image_uncond + image_scale * (v_text - v_image_uncond)
    v = v_text if v_image_uncond is None else v_image_uncond + image_scale * (v_text - v_image_uncond)
    if renorm_type not in ("global", "channel"):
        raise ValueError(f"unknown cfg_renorm_type {renorm_type!r}; expected global, channel or text_channel")
    return renorm(v, v_cond, per_token=renorm_type == "channel", minimum=renorm_min)


def euler_sample(
    velocity: Callable[[torch.Tensor, float], torch.Tensor],
    noise: torch.Tensor,
    num_timesteps: int,
    shift: float,
) -> torch.Tensor:
    """Integrates the flow from `noise` (t = 1) to an image latent (t = 0).

    Args:
        velocity: ``velocity(x_t, t) -> v`` (N, P), guidance already applied.
        noise: (N, P) starting point x_1.
        num_timesteps: N_t timesteps (N_t - 1 Euler steps, i.e. N_t - 1 calls of `velocity`).
        shift: timestep shift s.

    Returns:
        (N, P) x_0.
    """
    times = inference_timesteps(num_timesteps, shift).tolist()
    x = noise
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x = x - velocity(x, t) * (t - t_next)
    return x
