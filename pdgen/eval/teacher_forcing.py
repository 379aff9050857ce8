"""A trajectory's texts predicted from the true context: how the probe tools read the planner and inspector.

Teacher forcing scores what the model would write at each token given the true text and images before it, in
one forward pass over the layout training uses, so a probe needs no generation and takes seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pdgen.data.packing import TextSplit, TrajectoryPacker
from pdgen.trajectory import Trajectory

if TYPE_CHECKING:
    from pdgen.lit.module import ProcessDrivenModule


@torch.no_grad()
def text_logits(
    module: ProcessDrivenModule, packer: TrajectoryPacker, trajectory: Trajectory
) -> list[tuple[TextSplit, torch.Tensor]]:
    """Every text of the trajectory's training layout, in order (the prompt, then its plans and inspections),
    with the (L, V) logits that predict its L labels; every image is clean, the true context."""
    sample = packer.sample(trajectory)
    batch = packer.collate([sample])
    batch.packed_timesteps = torch.zeros_like(batch.packed_timesteps)
    noise = torch.zeros(batch.packed_vae_token_indexes.numel(), module.trunk.config.patch_latent_dim)
    out = module.trunk(batch, latents=module.trunk.encode_images(batch.vae_images), noise=noise)
    logits = module.trunk.lm_logits(out.hidden_states, batch.ce_loss_indexes)  # (N_ce, V)
    texts, start = [], 0  # labels are collated split by split
    for split in sample.splits:
        if isinstance(split, TextSplit):
            if split.labels and batch.packed_label_ids[start] != split.labels[0].target:
                raise RuntimeError("collate reordered the labels: the logits would be read in wrong places")
            texts.append((split, logits[start : start + len(split.labels)]))
        start += len(split.labels)
    return texts
