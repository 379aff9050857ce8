"""Benchmark packed interleaved attention: pdgen's Triton kernel against FlexAttention and dense SDPA.

    python tools/bench_attention.py --save-layouts runs/packs.json            # any machine: build packs
    python tools/bench_attention.py --layouts runs/packs.json --markdown runs/attention.md   # a GPU

Packs are built the way training builds them: shapes-world trajectories (a plan and a sketch per
step, then the world judge's inspection of the final image) laid out by ``TrajectoryPacker`` at the
BAGEL-7B geometry (images resized to 512-1024 px, so 1,026 tokens per VAE copy; a noised and a clean
copy of every generated image; a ViT copy of the inspected one) and filled to 8K, 16K and 32K tokens
by ``TokenBudgetPacker``. Only the split layout matters to attention, so ``--save-layouts`` writes it
to JSON and ``--layouts`` reads it back: the GPU machine then needs nothing but torch and triton.

Implementations, timed forward and forward+backward at 7B head geometry (28 query heads over 4 KV
heads, head dim 128, bf16):
- ``triton``: ``pdgen.kernels.packed_attention``; a sweep of tile and launch configs on the largest
  pack picks the config used for all packs;
- ``flex``: ``torch.compile``d FlexAttention with the same rule as its mask_mod;
- ``sdpa``: ``scaled_dot_product_attention`` with the dense boolean mask (KV heads expanded so the
  memory-efficient backend takes it);
- ``fa-causal``: FlashAttention (SDPA, ``is_causal=True``) on a sequence whose causal pairs equal the
  pack's unmasked pairs: the roofline a perfect block-sparse kernel could approach.
TFLOP/s count only unmasked (query, key) pairs: 4 * pairs * D * H for the forward, 2.5x that for the
backward. Times are medians of ``triton.testing.do_bench``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pdgen.models.attention import flex_block_mask, packed_attention
from pdgen.models.mask import PackedAttentionMeta

Layout = dict[str, list]  # {"sample_lens": [...], "split_lens": [...], "split_modes": [...]}
TILES = [(128, 128), (128, 64), (64, 64)]


# --------------------------------------------------------------------------------------------------
# Packs
# --------------------------------------------------------------------------------------------------


def world_trajectories(seed: int) -> Iterator:
    """Endless multi-step trajectories of ShapesEval training prompts; one intermediate draft is inspected."""
    from pdgen.judges.world import WorldJudge
    from pdgen.trajectory import Inspect, Plan, Sketch, Trajectory
    from pdgen.world.prompts import shapes_eval_prompts
    from pdgen.world.rollout import rollout

    judge, rng = WorldJudge(), random.Random(seed)
    prompts = [row["prompt"] for row in shapes_eval_prompts("train", seed=seed)]
    for i in itertools.count():
        prompt = rng.choice(prompts)
        steps = rollout(prompt, seed=seed * 1_000_003 + i, augment=0.3)
        inspected = rng.randrange(len(steps) - 1) if len(steps) > 1 else None
        parts = []
        for i, step in enumerate(steps):
            parts += [Plan(step.goal.ins, step.goal.des), Sketch(step.image)]
            if i == inspected:
                parts.append(Inspect(judge.check_image(step.image, step.goal).analysis))
        yield Trajectory(prompt, parts)


def build_layouts(token_budgets: list[int], seed: int) -> dict[int, Layout]:
    """One pack per budget, at the 7B geometry, with a tokenizer trained on the world's own text."""
    from pdgen.data.packing import PackingConfig, TrajectoryPacker
    from pdgen.data.token_budget import TokenBudget, TokenBudgetPacker
    from pdgen.data.tokenizer import train_tokenizer

    corpus = [t.to_text() for t in itertools.islice(world_trajectories(seed), 200)]
    packer = TrajectoryPacker(train_tokenizer(corpus), PackingConfig.from_name("bagel-7b-mot"))
    layouts = {}
    for budget in token_budgets:
        samples = (packer.sample(t) for t in world_trajectories(seed + budget))
        fill = TokenBudget(budget, expected_tokens=budget * 97 // 100, max_tokens_per_sample=budget)
        batch = packer.collate(next(iter(TokenBudgetPacker(samples, fill))))
        layouts[budget] = {"sample_lens": batch.sample_lens, "split_lens": batch.split_lens,
                           "split_modes": batch.split_modes}
    return layouts


def describe(layout: Layout) -> str:
    modes = layout["split_modes"]
    return (f"{sum(layout['sample_lens'])} tokens, {len(layout['sample_lens'])} samples, {len(modes)} splits "
            f"({modes.count('causal')} text, {modes.count('noise')} noised, {modes.count('full')} clean/ViT)")


def unmasked_pairs(meta: PackedAttentionMeta, rows_per_chunk: int = 2048) -> int:
    """Exact count of (query, key) pairs the rule allows, without materialising the T x T mask."""
    keys, total = torch.arange(meta.num_tokens, device=meta.device), 0
    for rows in keys.split(rows_per_chunk):
        total += int(meta.may_attend(rows[:, None], keys[None, :]).sum())
    return total


# --------------------------------------------------------------------------------------------------
# Implementations: fn(q, k, v) -> out, with q (T, H, D) and k, v (T, Hkv, D)
# --------------------------------------------------------------------------------------------------


def _heads_first(x: torch.Tensor, group: int = 1) -> torch.Tensor:
    """(T, heads, D) -> (1, heads * group, T, D), repeating each head ``group`` times (GQA expanded)."""
    return x.repeat_interleave(group, dim=1).transpose(0, 1)[None]


def sdpa_dense(meta: PackedAttentionMeta) -> Callable:
    mask = meta.dense_mask()

    def run(q, k, v):
        group = q.shape[1] // k.shape[1]
        out = F.scaled_dot_product_attention(_heads_first(q), _heads_first(k, group), _heads_first(v, group),
                                             attn_mask=mask)
        return out[0].transpose(0, 1)

    return run


def fa_causal(length: int) -> Callable:
    """Causal FlashAttention on the first ``length`` tokens of q, k, v (a sequence of equal work)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def run(q, k, v):
        group = q.shape[1] // k.shape[1]
        q, k, v = _heads_first(q[:length]), _heads_first(k[:length], group), _heads_first(v[:length], group)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)[0].transpose(0, 1)

    return run


def triton_candidates() -> list:
    """Configs to sweep: each plan tile size with a few launch shapes (the FA-2 tutorial's among them)."""
    from pdgen.kernels.packed_attention import KernelConfig, Launch

    def launches(tm: int, tn: int, shape: str) -> dict:
        return {  # fwd, dkdv, dq; "tutorial" is the FA-2 tutorial's H100 shape, clamped to the tile
            "tutorial": dict(fwd=Launch(tm, 64, 8, 3), dkdv=Launch(tn, 32, 8, 2), dq=Launch(tm, 32, 8, 2)),
            "narrow": dict(fwd=Launch(tm, 64, 4, 3), dkdv=Launch(tn, 32, 4, 3), dq=Launch(tm, 32, 4, 3)),
            "wide": dict(fwd=Launch(tm, tn, 8, 2), dkdv=Launch(tn, 64, 8, 2), dq=Launch(tm, 64, 8, 2)),
            "small": dict(fwd=Launch(64, 64, 4, 3), dkdv=Launch(64, 64, 4, 2), dq=Launch(64, 64, 4, 2)),
        }[shape]

    sweep = [(128, 128, "tutorial"), (128, 128, "narrow"), (128, 128, "wide"),
             (128, 64, "tutorial"), (128, 64, "wide"), (64, 64, "small")]
    return [KernelConfig(tm, tn, **launches(tm, tn, shape)) for tm, tn, shape in sweep]


def triton_with(meta: PackedAttentionMeta, config) -> Callable:
    from pdgen.kernels.packed_attention import triton_packed_attention

    return lambda q, k, v: triton_packed_attention(q, k, v, meta, config=config)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def wall_ms(fn: Callable) -> tuple[float, object]:
    """One synchronised call: for one-off work (plans, masks) that do_bench would cache away."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3, result


def bench_ms(fn: Callable, q, k, v, backward: bool) -> float:
    from triton.testing import do_bench

    if not backward:
        with torch.no_grad():
            return do_bench(lambda: fn(q, k, v), warmup=25, rep=100, return_mode="median")
    grad_out = torch.randn_like(fn(q, k, v))  # fa-causal's output is shorter than q
    return do_bench(lambda: fn(q, k, v).backward(grad_out), warmup=25, rep=100, grad_to_none=[q, k, v],
                    return_mode="median")


def tflops(pairs: int, heads: int, head_dim: int, ms: float, backward: bool) -> float:
    return 4 * pairs * head_dim * heads * (3.5 if backward else 1.0) / (ms * 1e-3) / 1e12


def measure(name: str, fn: Callable, q, k, v, pairs: int, check: torch.Tensor | None) -> dict:
    """Forward and forward+backward times of one implementation; errors are recorded, not raised."""
    row = {"impl": name}
    try:
        if check is not None:
            with torch.no_grad():
                row["max_abs_err_vs_sdpa"] = (fn(q, k, v).float() - check).abs().max().item()
        for backward, key in ((False, "fwd"), (True, "fwd_bwd")):
            row[f"{key}_ms"] = bench_ms(fn, q, k, v, backward)
            row[f"{key}_tflops"] = tflops(pairs, q.shape[1], q.shape[2], row[f"{key}_ms"], backward)
    except Exception as error:  # an OOM or a backend refusal is a result, not a crash
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    torch.cuda.empty_cache()
    print(f"    {row}", flush=True)
    return row


def bench_pack(budget: int, layout: Layout, args: argparse.Namespace, best_config=None) -> tuple[dict, Any]:
    """Time every implementation on one pack; sweep the Triton configs unless ``best_config`` is given."""
    from pdgen.kernels.packed_attention import plan_tiles

    meta = PackedAttentionMeta.from_splits(**layout, device="cuda")
    T, pairs = meta.num_tokens, unmasked_pairs(meta)
    print(f"pack {budget}: {describe(layout)}; unmasked pairs {pairs / T**2:.1%} of T^2", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(T, heads, args.head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
               .requires_grad_() for heads in (args.heads, args.kv_heads, args.kv_heads))

    setup = {"flex_block_mask_ms": wall_ms(lambda: flex_block_mask(meta))[0]}
    for tm, tn in TILES:
        setup[f"triton_plan_{tm}x{tn}_ms"], plan = wall_ms(lambda: plan_tiles(meta, tm, tn))  # noqa: B023
        setup[f"triton_visits_{tm}x{tn}"] = round(plan.visited_fraction, 4)

    with torch.no_grad():
        check = sdpa_dense(meta)(q, k, v).float()
    configs = triton_candidates() if best_config is None else [best_config]
    sweep = [(c, measure("triton", triton_with(meta, c), q, k, v, pairs, check)) for c in configs]
    timed = [(c, row) for c, row in sweep if "fwd_bwd_ms" in row] or sweep[:1]
    best_config, best = min(timed, key=lambda item: item[1].get("fwd_bwd_ms", math.inf))
    length = math.isqrt(2 * pairs)  # causal pairs L(L+1)/2 ~ the pack's unmasked pairs
    rows = [
        {**best, "config": repr(best_config)},
        measure("flex", lambda q, k, v: packed_attention(q, k, v, meta, impl="flex"), q, k, v, pairs, check),
        measure("sdpa", sdpa_dense(meta), q, k, v, pairs, check),
        measure("fa-causal", fa_causal(min(length, T)), q, k, v, length * (length + 1) // 2, None),
    ]
    result = {"budget": budget, "tokens": T, "layout": describe(layout), "unmasked_pairs": pairs,
              "setup": setup, "rows": rows, "triton_sweep": [{**r, "config": repr(c)} for c, r in sweep]}
    return result, best_config


def markdown(results: list[dict], device: str, command: str) -> str:
    lines = [f"Machine: {device}; torch {torch.__version__}. Command: `{command}`", ""]
    for res in sorted(results, key=lambda r: r["budget"]):
        triton = next(row for row in res["rows"] if row["impl"] == "triton")
        lines += [f"**{res['budget']}-token pack** — {res['layout']}; unmasked pairs "
                  f"{res['unmasked_pairs'] / res['tokens'] ** 2:.1%} of T². Setup per pack: {res['setup']}. "
                  f"Triton config: `{triton.get('config')}`.", "",
                  "| impl | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | vs triton (fwd+bwd) |",
                  "|---|---|---|---|---|---|"]
        for row in res["rows"]:
            if "error" in row:
                lines.append(f"| {row['impl']} | {row['error']} | | | | |")
                continue
            speedup = row["fwd_bwd_ms"] / triton.get("fwd_bwd_ms", math.nan)
            lines.append(f"| {row['impl']} | {row['fwd_ms']:.2f} | {row['fwd_tflops']:.0f} | "
                         f"{row['fwd_bwd_ms']:.2f} | {row['fwd_bwd_tflops']:.0f} | {speedup:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 32768])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layouts", type=Path, help="read pack layouts from this JSON, do not build them")
    parser.add_argument("--save-layouts", type=Path, help="build the pack layouts, write them here, stop")
    parser.add_argument("--heads", type=int, default=28)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--json", type=Path, help="write all measurements here (after every pack)")
    parser.add_argument("--markdown", type=Path, help="write the result tables here")
    args = parser.parse_args(argv)

    if args.layouts:
        layouts = {int(budget): layout for budget, layout in json.loads(args.layouts.read_text()).items()}
    else:
        layouts = build_layouts(args.tokens, args.seed)
    if args.save_layouts:
        args.save_layouts.parent.mkdir(parents=True, exist_ok=True)
        args.save_layouts.write_text(json.dumps(layouts))
        for budget, layout in layouts.items():
            print(f"{budget}: {describe(layout)}")
        return 0
    if not torch.cuda.is_available():
        print("bench_attention times GPU kernels and no CUDA device is here (--save-layouts builds packs)")
        return 2

    device = f"{torch.cuda.get_device_name()} ({platform.node()})"
    results, best_config = [], None
    for budget in sorted(args.tokens, reverse=True):  # the sweep runs on the largest pack only
        result, best_config = bench_pack(budget, layouts[budget], args, best_config)
        results.append(result)
        if args.json:  # after every pack, so a run cut short keeps what it measured
            args.json.write_text(json.dumps({"device": device, "results": results}, indent=1))
    table = markdown(results, device, "python " + " ".join(sys.argv))
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
