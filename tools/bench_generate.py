"""What the process costs: process-driven generation against single-pass generation on the tiny model.

Issue 6's goal: on the tiny model, the wall time of a process-driven generation should be at most 1.15x
(images drawn x the wall time of one single-pass generation), i.e. the reasoning around the images (the text
the model writes, every image written back into the context, the decisions) costs at most 15 % on
top of sampling the images themselves.

The model is the `embedded` trunk of `configs/full.yaml` with random weights (timing does not depend on
what the weights draw). A random model would never close a text or stop, so each generation is steered
through the paper's loop on a shapes-world trajectory (what the embedded trunk trains on): a `Script`
forces the decisions (draw after each plan, continue after each image but the last, stop after it), and the
plans are *dictated*: the model still writes them itself, by the loop's own decoding (one token a pass, or
with the preset's prompt-lookup drafts, several), but its LM head is told which token wins (`DictatedHead`),
so every run writes the same realistic text. ``--draft-tokens 0 8`` times both decodings in one run. With
``--inspect`` every image but the last also gets its ViT copy and a one-sentence critique, the paper's
Inspect step.

Both modes run on the same prompts with the same seeds, interleaved because the machine is shared and its
speed drifts: each pair is the process-driven generation with one single-pass generation per image it draws
around it (single, process, single, single; then single, single, process, single; ...), so that both sides
of the ratio take about as long. The ratio is taken per pair and the median reported, beside the ratio of
the best times per prompt and the ratio of the generating thread's CPU time.
``--breakdown`` then splits the wall time of both modes by kind of trunk pass (image queries, text tokens,
blocks written, everything outside the trunk), which says where the process's extra time goes.
``--passes L`` times single trunk passes instead: a one-token pass, a token with 8 drafts and an image query
(66 tokens on the embedded trunk) over L cached tokens (to compare two versions of the trunk, run it with
each on ``PYTHONPATH``, alternated).

    nice -n 10 python tools/bench_generate.py --prompts 3 --repeats 3 --breakdown
    nice -n 10 python tools/bench_generate.py --passes 200
    python tools/bench_generate.py --json out/generate.json --markdown out/generate.md
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pdgen.data.multiturn import MultiTurnSpec, multiturn_trajectory
from pdgen.data.packing import PackingConfig
from pdgen.data.subset_build import TOKENIZER_VOCAB
from pdgen.data.tokenizer import encode_text, train_tokenizer
from pdgen.inference import Generation, GenerationConfig, LoopState, Script, generate
from pdgen.inference import loop as loop_module
from pdgen.inference.context import Block, CachedSequence
from pdgen.models.bagel import BagelConfig, BagelTrunk
from pdgen.trajectory import IM_END, IM_START, VISION_START, Plan

CRITIQUE = "The image matches the plan."
"""What an inspection says with ``--inspect`` (a model that draws what it planned)."""

Generate = Callable[..., Generation]
"""`pdgen.inference.generate` or a drop-in (to time another version of the loop in the same run)."""


class RecordingEmbedding(nn.Embedding):
    """The trunk's token embedding, remembering the ids it embedded last (the block a pass feeds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_ids: list[int] = []

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        self.last_ids = token_ids.tolist()
        return super().forward(token_ids)


class DictatedHead(nn.Module):
    """An LM head that computes its logits as usual, then makes the dictated tokens win.

    A text pass feeds the last token written and the tokens drafted after it
    (``GenerationConfig.draft_tokens``), and asks for logits at every row. Row i is made to predict the
    dictation's i-th next token as long as the drafted tokens before it are the dictated ones, so greedy
    decoding keeps exactly those drafts and writes exactly the queue; the head pops what the loop writes
    (the matching drafts and one more). It reads the drafts from the block `embedding` embedded last. The
    decisions that follow a text find the queue empty and see the head's own logits (the `Script`
    overrides them anyway).

    Args:
        head: the trunk's LM head (its cost is kept: the logits are computed every call).
        embedding: the trunk's token embedding, recording.
    """

    def __init__(self, head: nn.Module, embedding: RecordingEmbedding) -> None:
        super().__init__()
        self.head, self.embedding = head, embedding
        self.queue: list[int] = []

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)  # (R, V) or (V,)
        if not self.queue:
            return logits
        rows = logits.clone().view(-1, logits.shape[-1])  # (R, V)
        drafted = self.embedding.last_ids[1 : rows.shape[0]]  # after the last token written
        agreed = 0
        while agreed < min(len(drafted), len(self.queue)) and drafted[agreed] == self.queue[agreed]:
            agreed += 1
        written = min(agreed + 1, len(self.queue))  # a kept drafted <|im_end|> ends the text: no pick
        for row in range(written):
            rows[row, self.queue[row]] = rows[row].max() + 1.0
        del self.queue[:written]
        return rows.view_as(logits)


class Dictation(Script):
    """A `Script` whose texts the model writes itself, token by token, by dictation to a `DictatedHead`."""

    def __init__(self, decisions: list[str], texts: list[str], head: DictatedHead, tokenizer: Any) -> None:
        super().__init__(decisions, texts)
        self.head, self.tokenizer = head, tokenizer

    def write(self, state: LoopState) -> str | None:
        text = super().write(state)
        assert text is not None, "a dictation has one text per text segment"
        ids = encode_text(self.tokenizer, text, "a dictated text")
        self.head.queue = [*ids, self.tokenizer.convert_tokens_to_ids(IM_END)]
        return None


@dataclass(frozen=True)
class Case:
    """One prompt of the bench: the prompt, its dictated texts and the decisions that go with them."""

    prompt: str
    texts: list[str]
    decisions: list[str]
    seed: int


def world_cases(num_prompts: int, images: int, inspect: bool) -> list[Case]:
    """Multi-turn shapes-world trajectories with at least `images` plans, cut to their first `images`."""
    spec = MultiTurnSpec(num_trajectories=1 << 20, val_size=0)
    cases, index = [], 0
    while len(cases) < num_prompts:
        trajectory = multiturn_trajectory(spec, index)
        plans = [f"<ins>{s.ins}</ins><des>{s.des}</des>" for s in trajectory.steps if isinstance(s, Plan)]
        index += 1
        if len(plans) < images:
            continue
        texts, decisions = [], []
        for k, plan in enumerate(plans[:images]):
            if k and inspect:  # critique the image before, then plan again
                texts.append(CRITIQUE)
                decisions.append(IM_START)
            texts.append(plan)
            decisions += [VISION_START, IM_END if k == images - 1 else IM_START]
        cases.append(Case(trajectory.prompt, texts, decisions, seed=index))
    return cases


def build_model(preset: str, cases: list[Case]) -> tuple[BagelTrunk, DictatedHead, Any, PackingConfig]:
    """A random trunk of `preset` with a dictated head, a tokenizer trained on the world's texts, packing."""
    spec = MultiTurnSpec(num_trajectories=16, val_size=0)  # the world's texts repeat: 16 teach every merge
    corpus = [multiturn_trajectory(spec, i).to_text() for i in range(16)] + [CRITIQUE]
    tokenizer = train_tokenizer(corpus * 4 + [c.prompt for c in cases], vocab_size=TOKENIZER_VOCAB)
    torch.manual_seed(0)
    trunk = BagelTrunk(BagelConfig.from_name(preset)).eval()
    with torch.no_grad():  # a zero velocity head (the init) would draw one flat image
        trunk.llm2vae.weight.normal_(std=0.05)
    model = trunk.language_model.model
    embedding = RecordingEmbedding(*model.embed_tokens.weight.shape, _weight=model.embed_tokens.weight.data)
    model.embed_tokens = embedding
    head = DictatedHead(trunk.language_model.lm_head, embedding)
    trunk.language_model.lm_head = head
    return trunk, head, tokenizer, PackingConfig.from_name("tiny").for_trunk(trunk.config)


@dataclass
class Pair:
    """One prompt generated both ways, back to back: wall and CPU seconds of the process and the mean of its
    single-pass runs (one per image it draws, around it)."""

    prompt: str
    process: Generation
    process_cpu_s: float
    single_s: float
    single_cpu_s: float

    @property
    def ratio(self) -> float:
        """process wall time / (images drawn x single-pass wall time): the issue's figure."""
        return self.process.costs.wall_time_s / (len(self.process.images) * self.single_s)

    @property
    def cpu_ratio(self) -> float:
        """The same in CPU time of the generating thread, which other jobs on the machine disturb less."""
        return self.process_cpu_s / (len(self.process.images) * self.single_cpu_s)


class Bench:
    """Runs the cases in both modes with one loop implementation.

    Args:
        trunk, head, tokenizer, packing: from `build_model`.
        config: the process-mode generation config (the single-pass one is the same with
            ``mode="single_pass"``).
        generate_fn: the loop to time.
    """

    def __init__(
        self,
        trunk: BagelTrunk,
        head: DictatedHead,
        tokenizer: Any,
        packing: PackingConfig,
        config: GenerationConfig,
        generate_fn: Generate = generate,
    ) -> None:
        self.trunk, self.head, self.tokenizer, self.packing = trunk, head, tokenizer, packing
        self.config, self.generate = config, generate_fn

    def process(self, case: Case) -> tuple[Generation, float]:
        """The process-driven generation of `case` and the CPU seconds it took."""
        controller = Dictation(case.decisions, case.texts, self.head, self.tokenizer)
        started = time.thread_time()
        result = self.generate(
            self.trunk,
            self.tokenizer,
            case.prompt,
            self.config,
            case.seed,
            self.packing,
            controller=controller,
        )
        cpu_s = time.thread_time() - started
        written = [case.texts[i] in result.text for i in range(len(case.texts))]
        if result.error is not None or not all(written) or result.stop_reason != "stop_token":
            raise RuntimeError(
                f"the dictated run of {case.prompt!r} did not follow its script ({result.stop_reason}, "
                f"texts written {written}): {result.error or result.text}"
            )
        return result, cpu_s

    def single(self, case: Case) -> tuple[float, float]:
        """Wall and CPU seconds of the single-pass generation of `case`."""
        config = dataclasses.replace(self.config, mode="single_pass")
        started = time.thread_time()
        result = self.generate(self.trunk, self.tokenizer, case.prompt, config, case.seed, self.packing)
        return result.costs.wall_time_s, time.thread_time() - started

    def pair(self, case: Case, single_first: bool) -> Pair:
        """The process once and the single pass once per image, half before and half after it: the machine's
        speed drifts within seconds, and the images' single passes take about as long as the process, so
        both see the same drift (one single pass against the whole process made pairs range over 2x)."""
        images = case.decisions.count(VISION_START)
        before = (images + single_first) // 2
        singles = [self.single(case) for _ in range(before)]
        process = self.process(case)
        singles += [self.single(case) for _ in range(images - before)]
        wall, cpu = (statistics.fmean(times) for times in zip(*singles, strict=True))
        return Pair(case.prompt, *process, wall, cpu)


def run(benches: dict[str, Bench], cases: list[Case], repeats: int) -> dict[str, list[Pair]]:
    """Every (bench, case) pair `repeats` times, interleaved, after one untimed warm-up pair each."""
    for bench in benches.values():
        bench.pair(cases[0], single_first=False)
    pairs: dict[str, list[Pair]] = {name: [] for name in benches}
    for repeat in range(repeats):
        for i, case in enumerate(cases):
            for name, bench in benches.items():
                pairs[name].append(bench.pair(case, single_first=(repeat + i) % 2 == 1))
    return pairs


PASS_KINDS = ("image queries", "text tokens", "blocks written", "outside the trunk")


@contextlib.contextmanager
def pass_timer(seconds: dict[str, float]) -> Iterator[None]:
    """Adds the wall time of every trunk pass of the loop's contexts to `seconds`, by kind of pass: a
    query (never written), a pass of the model writing its text (a token and its drafts), or another
    block written (the prompt, forced text, image copies, what the unconditional contexts are fed)."""
    run_pass, model_text = CachedSequence.run, loop_module._Loop._model_text
    writing_text = False

    def timed(sequence: CachedSequence, block: Block, write: bool) -> torch.Tensor:
        started = time.perf_counter()
        hidden = run_pass(sequence, block, write)
        kind = "image queries" if not write else "text tokens" if writing_text else "blocks written"
        seconds[kind] += time.perf_counter() - started
        return hidden

    def flagged(loop: Any) -> Any:
        nonlocal writing_text
        writing_text = True
        try:
            return model_text(loop)
        finally:
            writing_text = False

    CachedSequence.run, loop_module._Loop._model_text = timed, flagged
    try:
        yield
    finally:
        CachedSequence.run, loop_module._Loop._model_text = run_pass, model_text


def breakdown(bench: Bench, cases: list[Case], repeats: int) -> dict[str, dict[str, float]]:
    """Seconds per prompt in each kind of pass: the process, and single-pass runs times the images drawn
    (the two modes interleaved prompt by prompt, like the timed pairs)."""
    modes = ("process", "single-pass x images")
    table = {mode: dict.fromkeys(PASS_KINDS, 0.0) for mode in modes}
    for _ in range(repeats):
        for case in cases:
            for mode in modes:
                seconds = dict.fromkeys(PASS_KINDS[:-1], 0.0)
                with pass_timer(seconds):
                    if mode == "process":
                        wall, scale = bench.process(case)[0].costs.wall_time_s, 1
                    else:
                        wall, scale = bench.single(case)[0], case.decisions.count(VISION_START)
                seconds["outside the trunk"] = wall - sum(seconds.values())
                for kind, value in seconds.items():
                    table[mode][kind] += scale * value / (len(cases) * repeats)
    return table


def pass_times(
    trunk: BagelTrunk, latent_tokens: int, cached: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Thread CPU milliseconds of a one-token text pass (written, as a decoded token is), of a token with 8
    drafted tokens (written, then the drafts taken back, as when the model keeps none) and of an image query
    (two markers around `latent_tokens`, not written, as each sampling step's) over `cached` tokens of
    context: median and best of `rounds` rounds, the kinds interleaved."""
    hidden = trunk.config.llm.hidden_size
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randn(cached, hidden, generator=generator)  # (L, C)
    context = CachedSequence(trunk)
    context.run(Block(prefix, torch.zeros(cached, dtype=torch.bool), "text"), write=True)
    text = torch.randn(9, hidden, generator=generator)  # (9, C)
    token, drafted = (Block(text[:n], torch.zeros(n, dtype=torch.bool), "text") for n in (1, 9))
    gen_mask = torch.ones(latent_tokens + 2, dtype=torch.bool)
    gen_mask[[0, -1]] = False  # the two markers
    image = Block(torch.randn(latent_tokens + 2, hidden, generator=generator), gen_mask, "image")

    def text_pass(block: Block) -> Callable[[], None]:
        def write() -> None:
            cache, rope = context.snapshot()  # each pass onto the same context: rewind after the write
            context.run(block, write=True)
            context.take_back(block.embeds.shape[0] - 1)
            context.rewind((cache, rope))

        return write

    def image_query() -> None:
        context.run(image, write=False)

    kinds = {
        "one-token pass": (text_pass(token), 20),
        "token + 8 drafts": (text_pass(drafted), 20),
        "image query": (image_query, 5),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for round_index in range(rounds + 2):  # two untimed warm-up rounds
        for name, (step, calls) in kinds.items():
            started = time.thread_time()
            for _ in range(calls):
                step()
            if round_index >= 2:
                times[name].append((time.thread_time() - started) / calls * 1e3)
    return {name: {"median_ms": statistics.median(t), "best_ms": min(t)} for name, t in times.items()}


def summary(pairs: list[Pair]) -> dict[str, float]:
    """Medians of the times and the ratio; means of the counters per prompt."""
    costs = [p.process.costs for p in pairs]

    def mean(field: str) -> float:
        return statistics.fmean(getattr(c, field) for c in costs)

    by_prompt: dict[str, list[Pair]] = {}
    for p in pairs:
        by_prompt.setdefault(p.prompt, []).append(p)
    best = [  # per prompt: the fastest process run over (images x the fastest single-pass run)
        min(p.process.costs.wall_time_s for p in runs)
        / (len(runs[0].process.images) * min(p.single_s for p in runs))
        for runs in by_prompt.values()
    ]
    return {
        "ratios": [p.ratio for p in pairs],
        "ratio_median": statistics.median(p.ratio for p in pairs),
        "ratio_of_best": statistics.median(best),
        "ratio_min": min(p.ratio for p in pairs),
        "ratio_max": max(p.ratio for p in pairs),
        "cpu_ratio_median": statistics.median(p.cpu_ratio for p in pairs),
        "process_s_median": statistics.median(c.wall_time_s for c in costs),
        "single_s_median": statistics.median(p.single_s for p in pairs),
        "images": mean("images"),
        "sampling_steps": mean("sampling_steps"),
        "forward_passes": mean("forward_passes"),
        "cfg_passes": mean("cfg_passes"),
        "text_tokens": mean("text_tokens"),
        "drafted_tokens": mean("drafted_tokens"),
        "drafted_tokens_kept": mean("drafted_tokens_kept"),
        "pairs": len(pairs),
    }


COLUMNS = (
    ("loop", "{}"),
    ("ratio (median)", "**{:.3f}x**"),
    ("ratio range", "{}"),
    ("ratio of best times", "{:.3f}x"),
    ("CPU-time ratio", "{:.3f}x"),
    ("process s", "{:.3f}"),
    ("single-pass s", "{:.3f}"),
    ("images", "{:.1f}"),
    ("sampling steps", "{:.1f}"),
    ("forward passes", "{:.1f}"),
    ("of them CFG", "{:.1f}"),
    ("text tokens", "{:.1f}"),
    ("drafts kept", "{}"),
)


def table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table, one row per loop."""
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for loop, s in results.items():
        values = [
            loop,
            s["ratio_median"],
            f"{s['ratio_min']:.2f}-{s['ratio_max']:.2f}",
            s["ratio_of_best"],
            s["cpu_ratio_median"],
            s["process_s_median"],
            s["single_s_median"],
            s["images"],
            s["sampling_steps"],
            s["forward_passes"],
            s["cfg_passes"],
            s["text_tokens"],
            f"{s['drafted_tokens_kept']:.1f} of {s['drafted_tokens']:.1f}",
        ]
        lines.append("| " + " | ".join(f.format(v) for (_, f), v in zip(COLUMNS, values, strict=True)) + " |")
    return "\n".join(lines)


def write_atomic(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, target)


def main(argv: list[str] | None = None, loops: dict[str, Generate] | None = None) -> dict[str, Any]:
    """Runs the bench; `loops` (name -> generate) times several loop versions side by side."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="embedded", help="trunk preset (configs/full.yaml: embedded)")
    parser.add_argument("--generation", default="tiny", help="GenerationConfig preset")
    parser.add_argument("--prompts", type=int, default=3, help="world prompts")
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs per prompt")
    parser.add_argument("--timesteps", type=int, help="override the preset's num_timesteps")
    parser.add_argument("--images", type=int, default=3, help="images drawn per process-driven generation")
    parser.add_argument("--inspect", action="store_true", help="ViT copy + a critique after each image")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--draft-tokens",
        type=int,
        nargs="+",
        metavar="K",
        help="override the preset's draft_tokens (prompt lookup); several values: a row each, interleaved",
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="then time each kind of trunk pass (first loop only)"
    )
    parser.add_argument(
        "--passes", type=int, metavar="L", help="only time single trunk passes over L cached tokens"
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    cases = world_cases(args.prompts, args.images, args.inspect)
    trunk, head, tokenizer, packing = build_model(args.preset, cases)
    side = packing.vae_max_size  # the largest image the trunk's position table holds (32 px for embedded)
    if args.passes is not None:
        latent_tokens = (side // packing.latent_downsample) ** 2  # 64 for the embedded trunk
        with torch.inference_mode():  # as `generate` runs them
            report = {"args": vars(args), "passes": pass_times(trunk, latent_tokens, args.passes, rounds=15)}
        for name, t in report["passes"].items():
            print(f"{name} over {args.passes} cached tokens: ", end="")
            print(f"median {t['median_ms']:.3f} ms, best {t['best_ms']:.3f} ms")
        if args.json:
            write_atomic(args.json, json.dumps(report, indent=2) + "\n")
        return report
    overrides = {} if args.timesteps is None else {"num_timesteps": args.timesteps}
    config = GenerationConfig.from_name(
        args.generation,
        image_size=(side, side),
        max_images=args.images + 1,  # the model stops by its own <|im_end|>, as in the paper
        inspect=args.inspect,
        **overrides,
    )
    loops = loops or {"pdgen": generate}
    benches = {}
    for name, fn in loops.items():
        for k in args.draft_tokens or [config.draft_tokens]:
            label = name if args.draft_tokens is None else f"{name}, draft_tokens={k}"
            benches[label] = Bench(
                trunk, head, tokenizer, packing, dataclasses.replace(config, draft_tokens=k), fn
            )
    pairs = run(benches, cases, args.repeats)
    results = {name: summary(p) for name, p in pairs.items()}

    print(
        f"{args.preset} trunk (random), {config.image_size[0]} px, {config.num_timesteps} timesteps, "
        f"cfg_text_scale {config.cfg_text_scale}, draft_tokens {args.draft_tokens or config.draft_tokens}, "
        f"{args.images} images a prompt"
        f"{' with inspections' if args.inspect else ''}, {args.prompts} prompts x {args.repeats} repeats, "
        f"{args.threads} thread(s)"
    )
    markdown = table(results)
    print(markdown)
    report = {"args": vars(args), "config": dataclasses.asdict(config), "results": results}
    if args.breakdown:
        report["breakdown"] = breakdown(next(iter(benches.values())), cases, args.repeats)
        lines = ["| seconds per prompt | " + " | ".join(PASS_KINDS) + " | total |", "|" + "---|" * 6]
        for mode, seconds in report["breakdown"].items():
            cells = " | ".join(f"{seconds[kind]:.3f}" for kind in PASS_KINDS)
            lines.append(f"| {mode} | {cells} | {sum(seconds.values()):.3f} |")
        markdown += "\n\n" + "\n".join(lines)
        print("\n".join(lines))
    if args.json:
        write_atomic(args.json, json.dumps(report, indent=2) + "\n")
    if args.markdown:
        write_atomic(args.markdown, markdown + "\n")
    return report


if __name__ == "__main__":
    main()
