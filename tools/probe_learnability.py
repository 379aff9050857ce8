"""How fast a fresh trunk learns to read its plan: a controlled experiment of a few minutes on the CPU.

`tools/probe_conditioning.py` shows that a `pdgen fit -c configs/full.yaml` checkpoint hardly reads the colour
words of its plan. This tool asks the question before it: under which conditions does the `embedded` trunk,
trained from scratch with the full recipe's optimiser, learn to read a colour (or a place) from in-context
text at all, and in how many steps? Every trajectory is one plan and one image: a grey 32 px canvas with
one square in the colour the text names,

    a photo of a red square  ->  <ins>Add a red square.</ins><des>The scene shows a red square.</des> [image]

always in the centre (`--cells 1`) or in a random cell of a 2x2 / 3x3 grid (`--cells 4|9`), optionally named
in the `<des>` (`--name-cells`: "... a red square at the top left."). Every `--every` steps it prints the
training MSE and two *reading ratios* at t = 1, where the image cannot be seen through the noise:

    R_colour = |v(text a) - v(text b)| / |x0_b - x0_a|   for red/blue, green/yellow, black/white
    R_place  = the same for the first and the last cell, one colour (with --name-cells)

With the noise fixed, a model that reads the text moves its velocity exactly as the named image demands
(R = 1); one that ignores the text predicts the same average for both (R = 0).

The best any model can do is not always 1. At t = 1 nothing of the image shows, so when the text does not say
where the square is (`--cells 4|9` without `--name-cells`), the best velocity can only move by the colour's
*average* over the cells the square could be in: R_colour's ceiling is then 1/sqrt(cells) (1/2 with 4 cells,
1/3 with 9). Each R is printed beside its share of that ceiling (R / ceiling), the figure to read.

`--pos-scale` and `--time-scale` rescale two summands of a noised token's input at init (the fixed 2-D
sin-cos table, whose rows have norm sqrt(C/2) = 8 at C = 128 and so dominate, and the flow-time embedding),
to measure how the balance of a random-init trunk's inputs changes the learning speed; 1 is BAGEL's.

    python tools/probe_learnability.py --side 0.2 --cells 1 --steps 300
    python tools/probe_learnability.py --side 0.2 --cells 9 --name-cells --steps 600 --pos-scale 0.1
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from PIL import Image, ImageDraw

from pdgen.data.packing import PackingConfig, TrajectoryPacker
from pdgen.data.subset_build import TOKENIZER_VOCAB
from pdgen.data.tokenizer import train_tokenizer
from pdgen.lit.module import ProcessDrivenModule
from pdgen.trajectory import Plan, Sketch, Trajectory
from pdgen.world.shapes import BACKGROUND, PALETTE

SIZE = 32  # pixels: the embedded trunk's 8 x 8 latent tokens
ROW_NAMES = {2: ("top", "bottom"), 3: ("top", "middle", "bottom")}
COLUMN_NAMES = {2: ("left", "right"), 3: ("left", "centre", "right")}
COLOUR_PAIRS = (("red", "blue"), ("green", "yellow"), ("black", "white"))


class SquareWorld:
    """One square per image, its colour (and cell) named by the text."""

    def __init__(self, side: float, cells: int, name_cells: bool) -> None:
        if cells not in (1, 4, 9):
            raise ValueError(f"--cells must be 1, 4 or 9, got {cells}")
        if name_cells and cells == 1:
            raise ValueError("--name-cells needs --cells 4 or 9")
        self.side, self.cells, self.name_cells = side, cells, name_cells
        self.grid = {1: 1, 4: 2, 9: 3}[cells]

    def trajectory(self, colour: str, cell: int) -> Trajectory:
        """The one-step trajectory drawing a ``colour`` square in ``cell`` (row-major; 0 when centred)."""
        row, column = divmod(cell, self.grid)
        cx, cy = SIZE * (column + 0.5) / self.grid, SIZE * (row + 0.5) / self.grid
        half = SIZE * self.side / 2
        image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
        box = [round(cx - half), round(cy - half), round(cx + half) - 1, round(cy + half) - 1]
        ImageDraw.Draw(image).rectangle(box, fill=PALETTE[colour])
        where = ""
        if self.name_cells:
            where = f" at the {ROW_NAMES[self.grid][row]} {COLUMN_NAMES[self.grid][column]}"
        plan = Plan(f"Add a {colour} square.", f"The scene shows a {colour} square{where}.")
        return Trajectory(f"a photo of a {colour} square", [plan, Sketch(image)])

    def corpus(self) -> list[str]:
        return [self.trajectory(c, k).to_text() for c in PALETTE for k in range(self.cells)]


def fresh_module(vision_start_id: int, pos_scale: float, time_scale: float, seed: int) -> ProcessDrivenModule:
    """The `embedded` trunk at random init, with the recipe's flow times, inputs rescaled as asked."""
    torch.manual_seed(seed)
    module = ProcessDrivenModule(
        "embedded", vision_start_id=vision_start_id, timestep_distribution="uniform", timestep_shift=1.0
    )
    trunk = module.trunk
    with torch.no_grad():
        trunk.latent_pos_embed.pos_embed.mul_(pos_scale)
        trunk.time_embedder.mlp[-1].weight.mul_(time_scale)
    return module


@torch.no_grad()
def reading_ratio(module: ProcessDrivenModule, packer: TrajectoryPacker, pairs: list[tuple]) -> float:
    """Mean R over ``pairs`` of (trajectory a, trajectory b), at t = 1 with the same noise for both."""
    trunk = module.trunk
    ratios = []
    for pair in pairs:
        velocities, images = [], []
        for trajectory in pair:
            batch = packer.collate([packer.sample(trajectory)])
            noised = torch.isin(batch.packed_vae_token_indexes, batch.mse_loss_indexes)
            batch.packed_timesteps = noised.float()  # t = 1 on the noised copy, 0 on the clean one
            noise = torch.randn(
                noised.numel(), trunk.config.patch_latent_dim, generator=torch.Generator().manual_seed(0)
            )
            out = trunk(batch, noise=noise)
            velocities.append(trunk.velocity(out.hidden_states, batch.mse_loss_indexes))
            images.append(noise[noised] - out.velocity_target)  # x0 = eps - v_target
        ratios.append(((velocities[0] - velocities[1]).norm() / (images[0] - images[1]).norm()).item())
    return sum(ratios) / len(ratios)


def colour_ceiling(cells: int, name_cells: bool) -> float:
    """The largest R_colour any model reaches at t = 1: 1 when the text fixes the square's cell (one cell, or
    named), else 1/sqrt(cells) (the best velocity moves by the colour's average over the possible cells)."""
    return 1.0 if cells == 1 or name_cells else 1.0 / math.sqrt(cells)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", type=float, default=0.2, help="square side as a fraction of the image")
    parser.add_argument("--cells", type=int, default=1, help="1 (centred), 4 or 9 random cells")
    parser.add_argument("--name-cells", action="store_true", help="the <des> names the square's cell")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16, help="trajectories per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=25, help="print every this many steps")
    parser.add_argument("--pos-scale", type=float, default=1.0, help="scale of the latent sin-cos table")
    parser.add_argument("--time-scale", type=float, default=1.0, help="scale of the time embedding at init")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    world = SquareWorld(args.side, args.cells, args.name_cells)
    tokenizer = train_tokenizer(world.corpus() * 3, vocab_size=TOKENIZER_VOCAB)
    module = fresh_module(
        tokenizer.convert_tokens_to_ids("<|vision_start|>"), args.pos_scale, args.time_scale, args.seed
    )
    packer = TrajectoryPacker(tokenizer, PackingConfig.from_name("tiny").for_trunk(module.trunk.config))
    colour_pairs = [(world.trajectory(a, 0), world.trajectory(b, 0)) for a, b in COLOUR_PAIRS]
    last = args.cells - 1
    place_pairs = [(world.trajectory(a, 0), world.trajectory(a, last)) for a, _ in COLOUR_PAIRS]
    optimizer = torch.optim.AdamW(module.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    draws = torch.Generator().manual_seed(args.seed)
    colours = list(PALETTE)

    ceiling = colour_ceiling(args.cells, args.name_cells)
    print(f"R_colour's ceiling: {ceiling:.3f} (R_place's: 1)")
    print(f"{'step':>5}{'mse':>9}{'R_colour':>10}{'/ceiling':>9}{'R_place':>9}{'s':>6}")
    started, mse = time.perf_counter(), float("nan")  # the MSE of the last training step
    for step in range(args.steps + 1):
        if step % args.every == 0:
            r_colour = reading_ratio(module, packer, colour_pairs)
            r_place = reading_ratio(module, packer, place_pairs) if args.name_cells else float("nan")
            elapsed = time.perf_counter() - started
            shares = f"{r_colour:>10.3f}{r_colour / ceiling:>9.2f}{r_place:>9.3f}"
            print(f"{step:>5}{mse:>9.4f}{shares}{elapsed:>6.0f}", flush=True)
        if step == args.steps:
            break
        picks = torch.randint(len(colours), (args.batch,), generator=draws).tolist()
        cells = torch.randint(args.cells, (args.batch,), generator=draws).tolist()
        samples = [packer.sample(world.trajectory(colours[c], k)) for c, k in zip(picks, cells, strict=True)]
        loss, _, step_mse = module.total_loss(module.head_losses(packer.collate(samples)))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        mse = step_mse.item()


if __name__ == "__main__":
    main()
