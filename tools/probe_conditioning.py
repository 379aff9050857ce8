"""Does the generator read the plan? How much a checkpoint's velocity moves when only the words change.

The same world rollout (an empty background, then one object) is packed twice with the same images, flow
times and noise, once with its own plan text ("Add a red circle.") and once with another object's words
("Add a blue square."). At flow time t the model cannot see the object through the noise when t is near 1,
so a generator that reads its plan predicts different velocities for the two texts; one that ignores the
text predicts the same average. Printed per t: the mean |v_a - v_b| over the second image's latent tokens,
the mean error |v_a - target| for scale, and the same difference for hidden states.

    python tools/probe_conditioning.py runs/full/version_0/checkpoints/last.ckpt data/multiturn-aug/tokenizer
"""

from __future__ import annotations

import argparse

import torch

from pdgen.data.packing import PackingConfig, TrajectoryPacker
from pdgen.data.tokenizer import load_tokenizer
from pdgen.lit.module import ProcessDrivenModule, packing_for_trunk
from pdgen.lit.predict import load_ema_weights
from pdgen.trajectory import Plan, Sketch, Trajectory
from pdgen.world.rollout import rollout

WORDS = (("red circle", "blue square"), ("green triangle", "yellow star"))


def load(ckpt: str) -> ProcessDrivenModule:
    """The checkpoint's module with its EMA weights when it has them (as `pdgen predict` samples)."""
    module = ProcessDrivenModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    load_ema_weights(module, ckpt)
    return module.eval()


def pair(words: tuple[str, str], seed: int) -> tuple[Trajectory, Trajectory]:
    """Two trajectories with the images of ``a photo of a <words[0]>`` and each one's own plan words."""
    empty, drawn = rollout(f"a photo of a {words[0]}", seed)[:2]

    def with_words(w: str) -> Trajectory:
        plan = Plan(f"Add a {w}.", f"The scene shows a {w} on a grey background.")
        steps = [Plan(empty.goal.ins, empty.goal.des), Sketch(empty.image), plan, Sketch(drawn.image)]
        return Trajectory(f"a photo of a {w}", steps)

    return with_words(words[0]), with_words(words[1])


@torch.no_grad()
def velocities(module: ProcessDrivenModule, packer: TrajectoryPacker, trajectory: Trajectory, t: float):
    """(velocity, target, hidden) at the last noised image's latent tokens, at flow time ``t``."""
    batch = packer.collate([packer.sample(trajectory)])
    n_vae = batch.packed_vae_token_indexes.numel()
    noised = torch.isin(batch.packed_vae_token_indexes, batch.mse_loss_indexes)
    batch.packed_timesteps = torch.where(noised, torch.tensor(t), torch.tensor(0.0))
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(n_vae, module.trunk.config.patch_latent_dim, generator=generator)
    out = module.trunk(batch, latents=module.trunk.encode_images(batch.vae_images), noise=noise)
    last = batch.mse_loss_indexes[-batch.vae_latent_shapes[-1][0] * batch.vae_latent_shapes[-1][1] :]
    rows = torch.isin(batch.mse_loss_indexes, last)
    v = module.trunk.velocity(out.hidden_states, batch.mse_loss_indexes)[rows]
    return v, out.velocity_target[rows], out.hidden_states[last]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpt", help="a `pdgen fit` checkpoint")
    parser.add_argument("tokenizer", help="the tokenizer directory it was trained with")
    parser.add_argument("--times", type=float, nargs="+", default=[1.0, 0.7, 0.4])
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = load(args.ckpt)
    packing = packing_for_trunk(PackingConfig.from_name("tiny"), module.trunk.config)
    packer = TrajectoryPacker(load_tokenizer(args.tokenizer), packing)
    print(f"{'words':<32}{'t':>5}{'|v_a - v_b|':>14}{'|v_a - target|':>16}{'|h_a - h_b| / |h|':>20}")
    for seed, words in enumerate(WORDS):
        a, b = pair(words, seed)
        for t in args.times:
            (va, target, ha), (vb, _, hb) = velocities(module, packer, a, t), velocities(module, packer, b, t)
            ratio = ((ha - hb).abs().mean() / ha.abs().mean()).item()
            print(f"{' vs '.join(words):<32}{t:>5.1f}{(va - vb).abs().mean().item():>14.4f}"
                  f"{(va - target).abs().mean().item():>16.4f}{ratio:>20.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
