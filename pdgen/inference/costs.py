"""What one generation cost (`Costs`), and the summary over a prompt set (`summarise`).

The paper's "inference cost" is the number of flow sampling steps per prompt, summed over every image
drawn (it reports 131 steps per prompt for process-driven generation against PARM's 1000). pdgen counts
an image as `num_timesteps` steps, as the paper counts BAGEL (50 per image); Euler itself makes
`num_timesteps - 1` updates between those times. Forward passes are counted too, because guidance makes
one sampling step cost up to three passes, and because text tokens and context write-backs are passes
of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Costs:
    """Counters of one generation (filled in by the loop).

    Attributes:
        images: images drawn.
        sampling_steps: sum over images of the sampler's ``num_timesteps`` (the paper's inference cost).
        forward_passes: every run of the trunk's decoder: one per text token fed, one per block written
            into a context, one per context queried at each Euler step.
        cfg_passes: the part of ``forward_passes`` spent on the unconditional contexts of guidance.
        text_tokens: tokens the model wrote in text segments (``<|im_end|>`` included; text forced by a
            controller is not counted).
        drafted_tokens: tokens drafted by prompt lookup and fed for verification
            (``GenerationConfig.draft_tokens``; `pdgen.inference.drafting`).
        drafted_tokens_kept: the part of ``drafted_tokens`` the model agreed with (each saved a pass).
        wall_time_s: seconds from the call to the return of ``generate``.
    """

    images: int = 0
    sampling_steps: int = 0
    forward_passes: int = 0
    cfg_passes: int = 0
    text_tokens: int = 0
    drafted_tokens: int = 0
    drafted_tokens_kept: int = 0
    wall_time_s: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """The counters as a JSON-ready dict (saved beside each trajectory)."""
        return dataclasses.asdict(self)


def summarise(costs: Sequence[Costs]) -> dict[str, float]:
    """Means and totals over many generations: ``prompts``, ``mean_<counter>`` and ``total_<counter>``.

    >>> summary = summarise([Costs(images=2, sampling_steps=100), Costs(images=1, sampling_steps=50)])
    >>> summary["mean_sampling_steps"], summary["total_images"]
    (75.0, 3)
    """
    if not costs:
        raise ValueError("summarise needs at least one Costs (got an empty list)")
    summary: dict[str, float] = {"prompts": len(costs)}
    for field in dataclasses.fields(Costs):
        total = sum(getattr(c, field.name) for c in costs)
        summary[f"mean_{field.name}"] = total / len(costs)
        summary[f"total_{field.name}"] = total
    return summary
