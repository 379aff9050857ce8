"""Benchmark packing: padding of 33K-token packs at the paper's trajectory statistics, and tokens/s of packed
against padded batches on the tiny trunk.

    python tools/bench_packing.py                      # both parts, Markdown to stdout
    python tools/bench_packing.py --part padding --samples 4000
    python tools/bench_packing.py --part throughput --repeats 5

Part 1, padding. Synthetic trajectories with the paper's Table 1 statistics: the mixture of the three
subsets (32,012 multi-turn, 15,201 conflict of which 8,296 negative, 15,000 alignment of which 10,000
negative), 2-5 images per sample with mean 3.51, each trajectory on one canvas of 512-1024 px (long side;
aspect 1:1, 4:3, 3:2 either way), text lengths in words drawn around the paper's examples (prompt 10-50,
<ins> 8-35, <des> 20-60, critique 25-60, <refine> 8-20). They are laid out by ``TrajectoryPacker`` with the
``bagel-7b-mot`` preset and packed by ``TokenBudgetPacker`` into packs of 33,000 tokens (emitted from 97 %
full). Padding fraction = share of the packs' 33,000-token capacity that holds no sample.

Part 2, throughput. The same generator at the tiny geometry (64 px canvas, short texts) packed into
2,048-token packs, against padded batches of the same samples (each batch as many samples as a pack holds
on average, every sample right-padded to the batch's longest). Each batch runs one forward + backward of
the tiny ``BagelTrunk`` (sdpa attention) with BAGEL's CE + MSE loss; tokens/s counts real tokens only.
Text is tokenized by a byte-level BPE (``train_tokenizer``) trained on the generated texts.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pdgen.data.packing import PackedBatch, PackingConfig, TrajectoryPacker
from pdgen.data.token_budget import TokenBudget, TokenBudgetPacker
from pdgen.data.tokenizer import train_tokenizer
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory

# Words of the scene descriptions the paper shows (rooms, objects, attributes, positions); written here.
_WORD_LIST = """
a an the of with and on in at to near beside behind under above below left right center middle foreground
background side top bottom corner wall floor table shelf window door room street scene sky grass field
road tree plant lamp chair sofa bed rug book cup bowl vase clock painting frame picture poster board
skateboard bird dog cat bear teddy zebra horse meter parking bench car bicycle umbrella kite ball apple
banana orange pizza cake bottle glass phone laptop keyboard small medium large tiny huge tall short wide
round square wooden metal plain soft fluffy smiling happy golden brown black white red blue green yellow
purple pink gray teal light dark bright pale striped spotted glossy matte realistic photographic style
natural lighting detailed texture shadow add place put create set up remove move replace recolor change
now features depicts shows image minimal simple indoor outdoor sitting standing lying hanging mounted
vertically horizontally facing toward away positioned placed newly added also both one two three four
number seven pile shavings panel strip floating against contradicts prompt states instead correct wrong
missing extra instruction conflict visual current generation diverges rather than should be is are
"""
WORDS = _WORD_LIST.split()

MIXTURE = {  # Table 1 of the paper: subset -> (samples, negatives)
    "multi-turn": (32_012, 0),
    "conflict": (15_201, 8_296),
    "alignment": (15_000, 10_000),
}
IMAGES_PER_SAMPLE = {2: 0.17, 3: 0.32, 4: 0.34, 5: 0.17}  # mean 3.51, max 5 (Table 1)
ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3)


@dataclass(frozen=True)
class Lengths:
    """Word-count ranges (inclusive) of each text field, and the canvas long side range in pixels."""

    prompt: tuple[int, int]
    ins: tuple[int, int]
    des: tuple[int, int]
    critique: tuple[int, int]
    refine: tuple[int, int]
    canvas: tuple[int, int]


PAPER = Lengths(
    prompt=(10, 50), ins=(8, 35), des=(20, 60), critique=(25, 60), refine=(8, 20), canvas=(512, 1024)
)
SHAPES = Lengths(prompt=(4, 12), ins=(4, 10), des=(6, 16), critique=(6, 16), refine=(4, 10), canvas=(32, 64))


def text(rng: np.random.Generator, span: tuple[int, int]) -> str:
    n = int(rng.integers(span[0], span[1] + 1))
    return " ".join(rng.choice(WORDS, size=n)).capitalize() + "."


def trajectories(rng: np.random.Generator, lengths: Lengths, count: int) -> Iterator[Trajectory]:
    """``count`` trajectories drawn from the Table 1 mixture (see the module docstring)."""
    subsets = list(MIXTURE)
    weights = np.array([MIXTURE[s][0] for s in subsets], dtype=float)
    counts, probs = list(IMAGES_PER_SAMPLE), list(IMAGES_PER_SAMPLE.values())
    canvases: dict[tuple[int, int], Image.Image] = {}  # one blank image per size: only sizes matter here
    for _ in range(count):
        subset = subsets[rng.choice(len(subsets), p=weights / weights.sum())]
        total, negatives = MIXTURE[subset]
        num_images = int(rng.choice(counts, p=probs))
        long_side = int(rng.integers(lengths.canvas[0] // 16, lengths.canvas[1] // 16 + 1)) * 16
        aspect = ASPECTS[rng.integers(len(ASPECTS))]
        size = (
            (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
        )
        canvas = canvases.setdefault(size, Image.new("L", size))

        def plan() -> Plan:
            return Plan(text(rng, lengths.ins), text(rng, lengths.des))  # noqa: B023

        steps: list = []
        inspect_after = int(rng.integers(1, num_images)) if subset != "multi-turn" else None
        negative = rng.random() < negatives / total
        made = 0
        while made < num_images:
            steps += [plan(), Sketch(canvas)]
            made += 1
            if made == inspect_after:
                if negative:
                    steps += [
                        Inspect(text(rng, lengths.critique), text(rng, lengths.refine)),
                        Refine(plan(), canvas),
                    ]
                    made += 1
                else:
                    steps.append(Inspect(text(rng, lengths.critique)))
        yield Trajectory(text(rng, lengths.prompt), steps)


def corpus(rng: np.random.Generator, lengths: Lengths, count: int = 400) -> list[str]:
    return [text(rng, span) for _ in range(count) for span in (lengths.prompt, lengths.des)]


@dataclass(frozen=True)
class Length:
    """A laid-out sample reduced to what the packer reads (so thousands fit in memory)."""

    num_tokens: int


def padding_part(samples: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    tokenizer = train_tokenizer(corpus(rng, PAPER), vocab_size=2048)
    packer = TrajectoryPacker(tokenizer, PackingConfig.from_name("bagel-7b-mot"))
    start = time.perf_counter()
    lengths = [Length(packer.sample(t).num_tokens) for t in trajectories(rng, PAPER, samples)]
    layout_seconds = time.perf_counter() - start
    tokens = [s.num_tokens for s in lengths]
    rows = []
    for buffer in (10, 50, 200):
        budget = TokenBudget.around(33_000, max_buffer_size=buffer)
        start = time.perf_counter()
        budget_packer = TokenBudgetPacker(lengths, budget)
        per_pack = [len(pack) for pack in budget_packer]
        seconds = time.perf_counter() - start
        s = budget_packer.stats
        rows.append(
            f"| {budget.max_tokens:,} | {budget.expected_tokens:,} | {buffer} | {s.skipped} | {s.packs:,} | "
            f"{statistics.mean(per_pack):.2f} | **{100 * s.padding_fraction:.2f} %** | {seconds:.2f} s |"
        )
    return [
        f"{samples:,} trajectories, {statistics.mean(tokens):,.0f} tokens each on average (median "
        f"{statistics.median(tokens):,.0f}, max {max(tokens):,}); laid out in {layout_seconds:.1f} s.",
        "",
        "| pack capacity | emitted from | buffer | skipped (> capacity) | packs | samples per pack | padding "
        "| packing time |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def loss(trunk, batch: PackedBatch, generators: tuple[torch.Generator, torch.Generator]) -> torch.Tensor:
    """BAGEL's training loss, CE + MSE; ``generators``: (CPU, for the flow times; the trunk's device)."""
    from pdgen.models.bagel.flow import sample_timesteps

    batch.packed_timesteps = sample_timesteps(batch, generator=generators[0])
    out = trunk(batch, generator=generators[1])
    ce = F.cross_entropy(trunk.lm_logits(out.hidden_states, batch.ce_loss_indexes), batch.packed_label_ids)
    mse = F.mse_loss(trunk.velocity(out.hidden_states, batch.mse_loss_indexes), out.velocity_target)
    return ce + mse


def throughput_part(samples: int, repeats: int, seed: int, device: str) -> list[str]:
    from pdgen.models.bagel.config import BagelConfig
    from pdgen.models.bagel.trunk import BagelTrunk

    rng = np.random.default_rng(seed)
    model_config = BagelConfig.from_name("tiny")
    tokenizer = train_tokenizer(corpus(rng, SHAPES), vocab_size=model_config.llm.vocab_size)
    packer = TrajectoryPacker(tokenizer, PackingConfig.for_model(model_config, **_tiny_policy()))
    laid_out = [packer.sample(t) for t in trajectories(rng, SHAPES, samples)]
    packs = list(TokenBudgetPacker(laid_out, TokenBudget.around(2048)))
    per_batch = round(len(laid_out) / len(packs))
    groups = [laid_out[i : i + per_batch] for i in range(0, len(laid_out), per_batch)]
    real = sum(s.num_tokens for s in laid_out)
    modes = {
        "packed": [packer.collate(pack).to(device) for pack in packs],
        "padded": [packer.collate_padded(group).to(device) for group in groups],
    }
    torch.manual_seed(seed)
    trunk = BagelTrunk(model_config).to(device)
    rows = []
    for mode, batches in modes.items():
        total = sum(b.sequence_length for b in batches)
        generators = (torch.Generator().manual_seed(seed), torch.Generator(device).manual_seed(seed))
        for batch in batches[:2]:  # warm-up
            loss(trunk, batch, generators).backward()
        times = []
        for _ in range(repeats):
            _synchronize(device)
            start = time.perf_counter()
            for batch in batches:
                loss(trunk, batch, generators).backward()
            _synchronize(device)
            times.append(time.perf_counter() - start)
        trunk.zero_grad(set_to_none=True)
        seconds = statistics.median(times)
        rows.append(
            f"| {mode} | {len(batches)} | {statistics.mean(b.sequence_length for b in batches):,.0f} | "
            f"{100 * (1 - real / total):.1f} % | {seconds:.2f} s | **{real / seconds:,.0f}** |"
        )
    return [
        f"{len(laid_out)} samples, {real:,} real tokens (mean {real / len(laid_out):.0f} per sample); "
        f"packs of 2,048 tokens hold {per_batch} samples on average, so a padded batch holds {per_batch}.",
        "",
        "| batches | count | tokens per batch (mean) | padding | forward + backward, all batches (median) "
        "| real tokens/s |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _tiny_policy() -> dict[str, int]:
    preset = PackingConfig.from_name("tiny")
    return {f: getattr(preset, f) for f in ("vae_min_size", "vae_max_size", "vit_min_size", "vit_max_size")}


def machine(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("padding", "throughput", "both"), default="both")
    parser.add_argument("--samples", type=int, default=3000, help="trajectories for the padding part")
    parser.add_argument("--tiny-samples", type=int, default=96, help="trajectories for the throughput part")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over all batches (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="where the throughput part runs the trunk")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.part in ("padding", "both"):
        print(f"Padding, on: {machine('cpu')}\n")
        print("\n".join(padding_part(args.samples, args.seed)) + "\n")
    if args.part in ("throughput", "both"):
        print(f"Throughput, on: {machine(args.device)}\n")
        print("\n".join(throughput_part(args.tiny_samples, args.repeats, args.seed, args.device)))


if __name__ == "__main__":
    main()
