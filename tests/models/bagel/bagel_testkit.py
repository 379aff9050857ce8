"""Shared pieces of the trunk tests: trajectories in the shapes of the paper's loop, the two losses, and a
split-by-split replay of a pack through the KV cache."""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory

CORPUS = [
    "<ins>Add a red circle in the center.</ins><des>A red circle sits in the center.</des>",
    "<ins>Add a blue square left of the circle.</ins><des>A blue square is left of a red circle.</des>",
    "The square is above the circle.<refine>Move the square left of the circle.</refine>",
    "a photo of a red circle and a blue square",
] * 4


def picture(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# Two trajectories of the paper's loop: plan -> sketch -> inspect (with a refine) -> refined image, and a
# single plan -> sketch. 64 px and 32-48 px images: 4x4 and 2x3 latent grids on the tiny trunk.
TWO_TRAJECTORIES = [
    Trajectory(
        "a red circle left of a blue square",
        [
            Plan("Add a red circle.", "A red circle."),
            Sketch(picture(64, 64, 0)),
            Inspect("The circle is in the center.", refine="Move the circle left."),
            Refine(Plan("Move the circle left.", "A red circle on the left."), picture(64, 64, 1)),
        ],
    ),
    Trajectory("a blue square", [Plan("Add a blue square.", "A blue square."), Sketch(picture(48, 32, 2))]),
]

# Plan -> sketch -> inspect (no refine) -> plan -> sketch: every split kind, including a ViT copy.
INSPECTED = Trajectory(
    "a red circle and a blue square",
    [
        Plan("Add a red circle.", "A red circle."),
        Sketch(picture(48, 32, 3)),
        Inspect("The circle is right."),
        Plan("Add a blue square.", "A circle and a square."),
        Sketch(picture(32, 32, 4)),
    ],
)


def losses(trunk, pack, generator):
    out = trunk(pack, generator=generator)
    ce = F.cross_entropy(trunk.lm_logits(out.hidden_states, pack.ce_loss_indexes), pack.packed_label_ids)
    mse = (trunk.velocity(out.hidden_states, pack.mse_loss_indexes) - out.velocity_target).pow(2).mean()
    return ce, mse


def replay_with_cache(trunk, pack, embedded, token_by_token_text: bool) -> torch.Tensor:
    """Feeds a one-sample pack split by split through `forward_cached`; noise splits stay out of the cache."""
    cache, hidden, start = trunk.new_cache(), [], 0
    for length, mode in zip(pack.split_lens, pack.split_modes, strict=True):
        if mode == "causal" and token_by_token_text:
            blocks = [slice(i, i + 1) for i in range(start, start + length)]
        else:
            blocks = [slice(start, start + length)]
        for block in blocks:
            before = len(cache)
            hidden.append(
                trunk.forward_cached(
                    embedded.sequence[block],
                    pack.packed_position_ids[block],
                    embedded.gen_mask[block],
                    cache,
                    causal=mode == "causal",
                    update_cache=mode != "noise",
                )
            )
            assert len(cache) == before + (0 if mode == "noise" else block.stop - block.start)
        start += length
    return torch.cat(hidden)
