"""Training throughput of a trunk preset on this machine: packed vs. padded, and against a dense transformer.

Each pdgen step is the full `ProcessDrivenModule` step: flow times, trunk over the pack, three heads,
backward, AdamW, on a pack as `TrajectoryPacker.collate` hands it to the DataLoader (with the `sdpa` masks
it builds there; `masks ms` says what building them costs).

**Packed vs. padded** (the default). The same multi-turn world trajectories laid out two ways: *packed*
(`TrajectoryPacker.collate`, samples end to end) and *padded* (`collate_padded`, every sample right-padded
to the longest). `useful tokens/s` counts only the trajectories' tokens, which is what training is made of.

**Against a dense reference** (`--reference`). `DenseReference` is a plain pre-norm decoder with the trunk's
width, depth, heads, KV heads, SwiGLU width, RMSNorm (q/k norms included) and RoPE, but one expert and no
image embedders: the model a (B, T) training loop would run. It trains on the same samples batched as
(B, T) rows right-padded to the longest, with causal SDPA per row (token ids everywhere: a latent token
enters as an id, as if images were text), CE at the pack's CE labels through its LM head and MSE at the
noised latent tokens through a linear head, then AdamW. Both models live in this process and their steps
alternate, so the machine's drifting speed weighs on both alike; the table gives each side's median step
and the median of the per-round ratios. Three kinds of pack:

- ``multi-turn``: multi-turn world trajectories (plan + sketch per step), ``--samples`` of them;
- ``mixture``: the reasoning mixture, multi-turn, conflict and alignment trajectories in turn (inspections,
  ViT copies, refinements), symbolic so no checkpoint is needed;
- ``single-image``: the base stage's short samples, a caption and one noised 32 px image (64 latent
  tokens); one in four is the reverse, a ViT copy of the image and then its caption, CE on the caption.

    python tools/bench_train.py --preset embedded --samples 8 --steps 5 --threads 2
    python tools/bench_train.py --reference --rounds 20 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

# As `pdgen fit` does (pdgen/cli.py), before torch loads: threads that finish early wait without spinning,
# so a shared core is not fought over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from pdgen.data.alignment import AlignmentSpec, alignment_samples
from pdgen.data.conflict import ConflictSpec, conflict_samples
from pdgen.data.multiturn import MultiTurnSpec, multiturn_trajectory
from pdgen.data.packing import (
    CeRole,
    CeTarget,
    ImageSplit,
    PackedBatch,
    PackedSample,
    PackingConfig,
    TextSplit,
    TrajectoryPacker,
)
from pdgen.data.subset_build import TOKENIZER_VOCAB
from pdgen.data.tokenizer import encode_text, train_tokenizer
from pdgen.lit.module import ProcessDrivenModule
from pdgen.models.attention import sdpa_layout
from pdgen.models.bagel.config import LLMConfig
from pdgen.models.bagel.qwen2_mot import RMSNorm, RotaryEmbedding, SwiGLU, apply_rope
from pdgen.models.mask import PackedAttentionMeta
from pdgen.trajectory import Trajectory
from pdgen.world.shapes import BACKGROUND, PALETTE

PACK_KINDS = ("multi-turn", "mixture", "single-image")
PLACES = ("top left", "top right", "bottom left", "bottom right")  # the four cells of `square`


# ---- the dense reference ---------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, config: LLMConfig) -> None:
        """One pre-norm decoder layer with one set of weights: Qwen2's, q/k norms included."""
        super().__init__()
        c, d, eps = config.hidden_size, config.head_dim, config.rms_norm_eps
        self.heads, self.kv_heads = config.num_heads, config.num_kv_heads
        self.input_layernorm = RMSNorm(c, eps)
        self.q_proj = nn.Linear(c, config.num_heads * d)
        self.k_proj = nn.Linear(c, config.num_kv_heads * d)
        self.v_proj = nn.Linear(c, config.num_kv_heads * d)
        self.o_proj = nn.Linear(config.num_heads * d, c, bias=False)
        self.q_norm = RMSNorm(d, eps)
        self.k_norm = RMSNorm(d, eps)
        self.post_attention_layernorm = RMSNorm(c, eps)
        self.mlp = SwiGLU(c, config.intermediate_size)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, t, c = x.shape
        h = self.input_layernorm(x)
        q = self.q_norm(self.q_proj(h).view(b, t, self.heads, -1))  # (B, T, H, D)
        k = self.k_norm(self.k_proj(h).view(b, t, self.kv_heads, -1))  # (B, T, Hkv, D)
        v = self.v_proj(h).view(b, t, self.kv_heads, -1)  # (B, T, Hkv, D)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
        )  # (B, H, T, D)
        x = x + self.o_proj(out.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.post_attention_layernorm(x))  # (B, T, C)


class DenseReference(nn.Module):
    def __init__(self, config: LLMConfig, latent_dim: int) -> None:
        """The plain transformer pdgen's step is measured against (see the module docstring)."""
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DenseLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.velocity_head = nn.Linear(config.hidden_size, latent_dim)

    def loss(self, batch: DenseBatch) -> torch.Tensor:
        b, t = batch.ids.shape
        cos, sin = self.rotary_emb(torch.arange(t), torch.float32)  # (T, 1, D) each
        rope = cos[None], sin[None]  # (1, T, 1, D): broadcast over rows and heads
        x = self.embed_tokens(batch.ids)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, rope)
        hidden = self.norm(x).view(b * t, -1)  # (B*T, C)
        ce = F.cross_entropy(self.lm_head(hidden[batch.ce_rows]), batch.labels)
        velocity = self.velocity_head(hidden[batch.mse_rows])  # (N_mse, P)
        return ce + (velocity - batch.velocity_target).pow(2).mean()


class DenseBatch:
    """A pack's samples as (B, T) rows right-padded to the longest; loss positions as flat row indexes."""

    def __init__(self, pack: PackedBatch, latent_dim: int, pad_id: int) -> None:
        longest = max(pack.sample_lens)
        starts = torch.tensor([0, *itertools.accumulate(pack.sample_lens)][:-1])
        row_of = torch.repeat_interleave(torch.arange(len(pack.sample_lens)), torch.tensor(pack.sample_lens))
        flat = row_of * longest + torch.arange(pack.sequence_length) - starts[row_of]  # (T_pack,)
        ids = torch.full((len(pack.sample_lens) * longest,), pad_id)
        ids[flat[pack.packed_text_indexes]] = pack.packed_text_ids
        self.ids = ids.view(len(pack.sample_lens), longest)  # (B, T)
        self.ce_rows = flat[pack.ce_loss_indexes]
        self.labels = pack.packed_label_ids
        self.mse_rows = flat[pack.mse_loss_indexes]
        self.velocity_target = torch.randn(self.mse_rows.numel(), latent_dim)


# ---- packs -------------------------------------------------------------------------------------------------


def multiturn(count: int, offset: int = 0) -> list[Trajectory]:
    spec = MultiTurnSpec(num_trajectories=offset + count, val_size=0)
    return [multiturn_trajectory(spec, offset + i) for i in range(count)]


def mixture(count: int) -> list[Trajectory]:
    """Multi-turn, conflict and alignment trajectories in turn (the reasoning mixture's three subsets)."""
    third = -(-count // 3)
    conflict = conflict_samples(ConflictSpec(num_samples=third, val_size=0))
    alignment = alignment_samples(AlignmentSpec(num_samples=third, val_size=0))
    subsets = zip(multiturn(third, offset=1000), conflict, alignment, strict=True)
    mixed = [t for m, c, a in subsets for t in (m, c.trajectory, a.trajectory)]
    return mixed[:count]


def square(colour: str, cell: int) -> Image.Image:
    """A 32 px canvas with one square in one of four cells."""
    image = Image.new("RGB", (32, 32), BACKGROUND)
    x, y = 16 * (cell % 2), 16 * (cell // 2)
    ImageDraw.Draw(image).rectangle([x + 3, y + 3, x + 12, y + 12], fill=PALETTE[colour])
    return image


def single_image_samples(packer: TrajectoryPacker, count: int) -> list[PackedSample]:
    """The base stage's samples: caption -> noised image, and one in four image (ViT) -> caption."""
    ids, colours, samples = packer.ids, list(PALETTE), []
    for i in range(count):
        colour, cell = colours[i % len(colours)], (i // len(colours)) % 4
        text = encode_text(packer.tokenizer, f"a {colour} square at the {PLACES[cell]}")
        caption = (ids.im_start, *text, ids.im_end)
        image = square(colour, cell)
        if i % 4 == 3:
            vit = ImageSplit(image, "vit", (4, 4), position=0)
            labels = tuple(CeTarget(k, caption[k + 1], CeRole.PLAN) for k in range(len(caption) - 1))
            samples.append(PackedSample((vit, TextSplit(caption, position=1, labels=labels))))
        else:
            drawn = ImageSplit(image, "vae", (8, 8), position=len(caption), noised=True,
                               labels=(CeTarget(65, ids.im_end, CeRole.SPECIAL),))
            samples.append(PackedSample((TextSplit(caption, position=0), drawn)))
    return samples


def build_packs(kind: str, packer: TrajectoryPacker, samples: int) -> list[PackedSample]:
    if kind == "multi-turn":
        return [packer.sample(t) for t in multiturn(samples)]
    if kind == "mixture":
        return [packer.sample(t) for t in mixture(samples)]
    return single_image_samples(packer, samples)


def tokenizer_for_benchmarks(samples: int) -> Any:
    texts = [t.to_text() for t in multiturn(samples) + mixture(samples)]
    texts += [f"a {colour} square at the {place}" for colour in PALETTE for place in PLACES]
    return train_tokenizer(texts * 8, vocab_size=TOKENIZER_VOCAB)


# ---- timing ------------------------------------------------------------------------------------------------


def adamw(parameters, fused: bool) -> torch.optim.AdamW:
    """AdamW as the recipe builds it; `fused` takes torch's one-kernel CPU implementation."""
    return torch.optim.AdamW([p for p in parameters if p.requires_grad], lr=1e-3, fused=fused or None)


def pdgen_step(module: ProcessDrivenModule, batch: PackedBatch, fused: bool = False) -> Callable[[], None]:
    optimizer = adamw(module.parameters(), fused)

    def step() -> None:
        optimizer.zero_grad()
        module.total_loss(module.head_losses(copy.copy(batch)))[0].backward()
        optimizer.step()

    return step


def reference_step(model: DenseReference, batch: DenseBatch, fused: bool = False) -> Callable[[], None]:
    optimizer = adamw(model.parameters(), fused)

    def step() -> None:
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()

    return step


def seconds(step: Callable[[], None]) -> tuple[float, float]:
    """Wall and process CPU seconds of one call (CPU time counts this process's threads only, so it
    shows the step's own work when other jobs share the cores)."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(a: Callable[[], None], b: Callable[[], None], rounds: int) -> tuple[list, list]:
    """(wall, cpu) seconds of each step of `a` and `b`: a warm-up each, then `rounds` rounds in which who
    goes first alternates, so a drift in the machine's speed weighs on both alike."""
    a(), b()
    times_a, times_b = [], []
    for i in range(rounds):
        first, second = (b, a) if i % 2 else (a, b)
        one, two = seconds(first), seconds(second)
        times_a.append(two if i % 2 else one)
        times_b.append(one if i % 2 else two)
    return times_a, times_b


def median_ratio(ours: list, theirs: list, which: int) -> float:
    return statistics.median(a[which] / b[which] for a, b in zip(ours, theirs, strict=True))


def reference_table(module: ProcessDrivenModule, packer: TrajectoryPacker, args: argparse.Namespace) -> None:
    config = module.trunk.config
    torch.manual_seed(0)
    reference = DenseReference(config.llm, config.patch_latent_dim)
    print(f"{args.rounds} rounds; medians of the rounds: step times and pdgen / dense ratios (wall, CPU); "
          "masks ms: building the pack's sdpa masks, which collate does (outside the timed step) where "
          "PackedBatch.attention exists")
    print(f"{'pack':<14}{'samples':>8}{'tokens':>8}{'B x T':>8}{'pdgen ms':>10}{'dense ms':>10}"
          f"{'ratio':>7}{'CPU ratio':>10}{'images/s':>10}{'masks ms':>9}")
    for kind in args.kinds:
        count = args.single_image_samples if kind == "single-image" else args.samples
        pack = packer.collate(build_packs(kind, packer, count))
        dense = DenseBatch(pack, config.patch_latent_dim, packer.ids.pad)
        ours, theirs = alternate(
            pdgen_step(module, pack, args.fused_adamw),
            reference_step(reference, dense, args.fused_adamw),
            args.rounds,
        )
        ours_ms = 1e3 * statistics.median(t[0] for t in ours)
        images = pack.split_modes.count("noise")  # the images the step learns to draw
        shape = "x".join(map(str, dense.ids.shape))
        print(f"{kind:<14}{len(pack.sample_lens):>8}{pack.sequence_length:>8}{shape:>8}{ours_ms:>10.1f}"
              f"{1e3 * statistics.median(t[0] for t in theirs):>10.1f}{median_ratio(ours, theirs, 0):>7.2f}"
              f"{median_ratio(ours, theirs, 1):>10.2f}{1e3 * images / ours_ms:>10.1f}"
              f"{mask_build_ms(pack):>9.1f}", flush=True)


def mask_build_ms(pack: PackedBatch) -> float:
    """Median ms to build the pack's `sdpa` masks from its split layout (where they are built depends on
    the tree: in the step, or in `collate`, i.e. the DataLoader worker)."""

    def build() -> None:
        meta = PackedAttentionMeta.from_splits(pack.sample_lens, pack.split_lens, pack.split_modes)
        sdpa_layout(meta, torch.float32)

    return 1e3 * statistics.median(seconds(build)[0] for _ in range(5))


def packed_padded_table(
    module: ProcessDrivenModule, packer: TrajectoryPacker, args: argparse.Namespace
) -> None:
    samples = build_packs("multi-turn", packer, args.samples)
    useful = sum(s.num_tokens for s in samples)
    print(f"{args.samples} multi-turn trajectories ({useful} tokens)")
    print(f"{'layout':<8}{'tokens':>8}{'steps/s':>10}{'tokens/s':>10}{'useful tokens/s':>17}")
    for name, batch in (("packed", packer.collate(samples)), ("padded", packer.collate_padded(samples))):
        step = pdgen_step(module, batch, args.fused_adamw)
        step()
        per_step = statistics.median(seconds(step)[0] for _ in range(args.steps))
        tokens = batch.sequence_length
        rates = f"{1 / per_step:>10.2f}{tokens / per_step:>10.0f}{useful / per_step:>17.0f}"
        print(f"{name:<8}{tokens:>8}{rates}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="embedded", help="trunk preset")
    parser.add_argument("--samples", type=int, default=8, help="trajectories per multi-turn / mixture pack")
    parser.add_argument("--single-image-samples", type=int, default=24, help="samples per single-image pack")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each packed/padded layout")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--reference", action="store_true", help="time pdgen against the dense reference")
    parser.add_argument("--rounds", type=int, default=20, help="alternating rounds per pack (--reference)")
    parser.add_argument("--kinds", nargs="+", choices=PACK_KINDS, default=list(PACK_KINDS))
    parser.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) on both sides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = tokenizer_for_benchmarks(args.samples)
    torch.manual_seed(0)
    vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    module = ProcessDrivenModule(args.preset, vision_start_id=vision_start)
    packing = PackingConfig.from_name("tiny").for_trunk(module.trunk.config)
    packer = TrajectoryPacker(tokenizer, packing)
    adam = "fused AdamW" if args.fused_adamw else "AdamW"
    print(f"preset {args.preset}, {args.threads} threads, {adam}, torch {torch.__version__}")
    if args.reference:
        reference_table(module, packer, args)
    else:
        packed_padded_table(module, packer, args)


if __name__ == "__main__":
    main()
