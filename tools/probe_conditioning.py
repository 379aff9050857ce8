"""Does the generator read the plan? How far a checkpoint's velocity moves when only the words change, as a
share of how far a perfect reader's would.

A world rollout of ``a photo of a <words a>`` (the background, then one object) is packed twice with the same
images, flow times and noise: once with its own plan text, once with the plan the world writes for
``<words b>`` (same seed). A generator that reads its plan predicts different velocities for the two texts;
one that ignores the text predicts the same.

How different should they be? A perfect reader's velocity is ``v*(x_t, text) = (x_t - E[x0 | x_t, text])
/ t`` (rectified flow: ``x_t = (1 - t) x0 + t eps``, ``v = eps - x0``), so the difference it makes between two
texts is ``(E[x0 | x_t, b] - E[x0 | x_t, a]) / t``. The tool estimates each posterior mean from the world
itself: the images of ``--candidates`` rollouts of the prompt whose plan text is exactly the one packed
(weighted by how well each explains x_t). At t = 1 that is the mean image of the text; where the text does not
fix the object's place or colour it is an average, and the ceiling is correspondingly small.

Printed per pair and t: the model's mean |v_a - v_b| over the drawn image's latent tokens, the perfect
reader's, and their ratio (1: reads the plan as well as possible; 0: ignores it), with the model's error
|v_a - target| for scale.

    python tools/probe_conditioning.py runs/full/version_0/checkpoints/last.ckpt data/base/tokenizer
"""

from __future__ import annotations

import argparse

import torch

from pdgen.data.packing import PackingConfig, TrajectoryPacker, image_grid, image_pixels
from pdgen.data.tokenizer import load_tokenizer
from pdgen.lit.module import ProcessDrivenModule
from pdgen.models.bagel.flow import add_noise
from pdgen.trajectory import Plan, Sketch, Trajectory
from pdgen.world.config import WorldConfig
from pdgen.world.rollout import WorldStep, rollout

WORDS = (
    ("red circle", "blue square"),
    ("green triangle", "yellow circle"),
    ("purple square", "orange triangle"),
)


def first_object(words: str, seed: int, world: WorldConfig) -> tuple[WorldStep, WorldStep]:
    """(background, first object) steps of the world's rollout of ``a photo of a <words>``."""
    empty, drawn = rollout(f"a photo of a {words}", seed, world)[:2]
    return empty, drawn


def trajectory(empty: WorldStep, drawn: WorldStep, text_of: WorldStep) -> Trajectory:
    """The background and ``drawn``'s image, with ``text_of``'s prompt words and plan."""
    goal = text_of.goal
    prompt = f"a photo of {goal.target.phrase()}" if goal.target is not None else goal.ins
    steps = [
        Plan(empty.goal.ins, empty.goal.des),
        Sketch(empty.image),
        Plan(goal.ins, goal.des),
        Sketch(drawn.image),
    ]
    return Trajectory(prompt, steps)


@torch.no_grad()
def model_velocity(
    module: ProcessDrivenModule, packer: TrajectoryPacker, traj: Trajectory, t: float, noise_seed: int
):
    """(velocity, target, x0, noise) at the drawn image's latent tokens, at flow time ``t``."""
    batch = packer.collate([packer.sample(traj)])
    noised = torch.isin(batch.packed_vae_token_indexes, batch.mse_loss_indexes)
    batch.packed_timesteps = torch.where(noised, torch.tensor(t), torch.tensor(0.0))
    noise = torch.randn(
        batch.packed_vae_token_indexes.numel(), module.trunk.config.patch_latent_dim,
        generator=torch.Generator().manual_seed(noise_seed),
    )  # fmt: skip
    latents = module.trunk.encode_images(batch.vae_images)
    out = module.trunk(batch, latents=latents, noise=noise)
    h, w = batch.vae_latent_shapes[-1]
    last = batch.mse_loss_indexes[-h * w :]
    rows = torch.isin(batch.mse_loss_indexes, last)
    velocity = module.trunk.velocity(out.hidden_states, batch.mse_loss_indexes)[rows]
    x0 = module.trunk.latent_tokens(latents, batch.vae_latent_shapes)
    on_last = torch.isin(batch.packed_vae_token_indexes, last)
    return velocity, out.velocity_target[rows], x0[on_last], noise[on_last]


def candidates(
    module: ProcessDrivenModule,
    packing: PackingConfig,
    words: str,
    goal_text: tuple[str, str],
    world: WorldConfig,
    count: int,
) -> torch.Tensor:
    """(K, N, P) latent tokens of world images whose plan text is ``goal_text`` (from ``count`` rollouts)."""
    found = []
    for seed in range(count):
        drawn = first_object(words, seed, world)[1]
        if (drawn.goal.ins, drawn.goal.des) == goal_text:
            grid = image_grid(
                drawn.image.size, packing.vae_min_size, packing.vae_max_size, packing.latent_downsample
            )
            pixels = image_pixels(drawn.image, grid, packing.latent_downsample)
            latents = module.trunk.encode_images([pixels])
            found.append(module.trunk.latent_tokens(latents, [grid]))
    if not found:
        raise ValueError(f"no rollout of {words!r} in {count} seeds writes the plan {goal_text}")
    return torch.stack(found)  # fmt: skip


def perfect_velocity(x_t: torch.Tensor, t: float, pool: torch.Tensor) -> torch.Tensor:
    """``(x_t - E[x0 | x_t]) / t``, the posterior over ``pool`` (K, N, P) from ``x_t ~ N((1-t) x0, t^2)``."""
    if t <= 0:
        raise ValueError("the perfect reader is defined for t > 0")
    log_weight = -((x_t[None] - (1 - t) * pool) ** 2).sum(dim=(1, 2)) / (2 * t * t)  # (K,)
    mean = (torch.softmax(log_weight, 0)[:, None, None] * pool).sum(0)  # (N, P)
    return (x_t - mean) / t


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpt", help="a `pdgen fit` checkpoint")
    parser.add_argument("tokenizer", help="the tokenizer directory it was trained with")
    parser.add_argument("--times", type=float, nargs="+", default=[1.0, 0.7, 0.4])
    parser.add_argument("--world", default="default", help="the world preset the checkpoint was trained on")
    parser.add_argument(
        "--candidates", type=int, default=64, help="rollouts searched per text for the ceiling"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = ProcessDrivenModule.load_for_sampling(args.ckpt)
    world = WorldConfig.from_name(args.world)
    packing = PackingConfig.from_name("tiny").for_trunk(module.trunk.config)
    packer = TrajectoryPacker(load_tokenizer(args.tokenizer), packing)
    print(f"{'words':<34}{'t':>5}{'|v_a - v_b|':>13}{'perfect':>9}{'ratio':>7}{'|v_a - target|':>16}")
    ratios = []
    for seed, (a, b) in enumerate(WORDS):
        empty, drawn = first_object(a, seed, world)
        other = first_object(b, seed, world)[1]
        pools = [candidates(module, packing, w, (s.goal.ins, s.goal.des), world, args.candidates)
                 for w, s in ((a, drawn), (b, other))]  # fmt: skip
        for t in args.times:
            va, target, x0, noise = model_velocity(module, packer, trajectory(empty, drawn, drawn), t, seed)
            vb = model_velocity(module, packer, trajectory(empty, drawn, other), t, seed)[0]
            x_t = add_noise(x0, noise, torch.full((x0.shape[0],), t))
            perfect = (
                (perfect_velocity(x_t, t, pools[0]) - perfect_velocity(x_t, t, pools[1])).abs().mean().item()
            )
            moved = (va - vb).abs().mean().item()
            ratios.append(moved / perfect)
            print(f"{a + ' vs ' + b:<34}{t:>5.1f}{moved:>13.4f}{perfect:>9.4f}{moved / perfect:>7.2f}"
                  f"{(va - target).abs().mean().item():>16.4f}")  # fmt: skip
    print(f"mean ratio {sum(ratios) / len(ratios):.2f} over {len(ratios)} (pair, t); 1 = a perfect reader")


if __name__ == "__main__":
    main()
