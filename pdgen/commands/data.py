"""Build and inspect training data: prompts, scene graphs, plans, trajectory shards.

`pdgen data <name>`: the functions in `COMMANDS` are the subcommands (see `pdgen.commands`): a docstring
is the help, the typed parameters the options. Keep imports of heavy modules inside the functions so that
`pdgen --help` and `pdgen data --help` stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pdgen.errors import UserError

if TYPE_CHECKING:
    from pdgen.data.skips import SkipCounter


def parse(prompt: str | None = None, /, file: Path | None = None) -> str:
    """Parse prompts into scene graphs and GenEval constraints (one JSON object per prompt).

    `pdgen data parse "a photo of two benchs"` or `pdgen data parse --file prompts.txt`.

    Prints one line per prompt with keys `prompt`, `graph`, `include` and, for exact counts, `exclude`,
    the last two in GenEval's schema. A prompt that cannot be parsed exits non-zero naming the words
    that were not understood.

    Args:
        prompt: one prompt.
        file: a text file with one prompt per line, or a GenEval metadata .jsonl (its `prompt` fields).
    """
    import json

    from pdgen.scene.parser import parse_record

    # A prompt it cannot read is a ParseError, a UserError: its message names the words.
    return "\n".join(json.dumps(parse_record(p)) for p in _prompts(prompt, file))


def plan(
    prompt: str, augment: bool = False, seed: int = 0, render: Path | None = None, world: str = "default"
) -> str:
    """Plan a prompt step by step (<ins>/<des> per step); optionally render each step in the shapes world.

    Args:
        prompt: the prompt to plan.
        augment: rewrite some steps into edit operations (recolor, replace, remove, move).
        seed: seeds the plan order, the augmentation and the layout.
        render: a folder for each step's world image (`step_NN.png`) and a strip of all steps (`strip.png`).
        world: the world preset (default, large, all): its order of objects, and its images with `--render`.
    """
    from pdgen.scene.parser import parse as parse_prompt
    from pdgen.scene.plan import plan as make_plan
    from pdgen.world.config import WorldConfig
    from pdgen.world.rollout import rollout, write_rollout

    probability = 0.5 if augment else 0.0
    graph = parse_prompt(prompt)  # a prompt it cannot read, a class outside the world, no layout: UserErrors
    config = WorldConfig.from_name(world)
    if render is None:
        goals = make_plan(graph, seed, probability, config.classes, shuffle=config.shuffles)
    else:
        steps = rollout(graph, seed, config, augment=probability)
        write_rollout(steps, render)
        goals = [s.goal for s in steps]
    return "\n".join(f"{i}. [{g.op}] <ins>{g.ins}</ins><des>{g.des}</des>" for i, g in enumerate(goals))


def build(
    subset: Literal["base", "multiturn", "conflict", "alignment", "edit"],
    /,
    out: Path | None = None,
    n: int | None = None,
    augment: bool = False,
    free_prompts: float | None = None,
    seed: int = 0,
    world: str = "default",
    val_size: int = 64,
    samples_per_shard: int = 500,
    from_ckpt: Path | None = None,
    tokenizer: Path | None = None,
    parser: Literal["template", "openai"] = "template",
    editor: Literal["world", "flux-kontext"] = "world",
    judge: Literal["world", "openai", "none"] = "world",
    prompts: Path | None = None,
    flux_path: Path | None = None,
    device: str | None = None,
    dtype: str = "bfloat16",
    offload: Literal["none", "model", "sequential"] = "none",
    steps: int = 28,
    size: int = 1024,
    batch_size: int = 4,
    base_url: str = "https://api.openai.com/v1",
    model: str = "gpt-4o-2024-08-06",
    api_key_env: str = "OPENAI_API_KEY",
    cache_dir: Path | None = None,
    num_shards: int | None = None,
    shard_index: int | None = None,
) -> str:
    """Build a training subset as webdataset shards, with a manifest and its statistics table.

    `pdgen data build multiturn --out data/multiturn --n 10000 [--augment]`: ShapesEval train prompts built
    step by step in the shapes world (Plan + Sketch per step), the data `MultiTurnDataModule` builds.

    `pdgen data build conflict --n 5000 [--from_ckpt CKPT]`: the
    instruction-intermediate conflict subset: one step per sample inspected against the prompt, positives
    saying why it is fine, negatives naming the conflict with a `<refine>` and the corrected step. Symbolic
    (scene-graph perturbations) without `--from_ckpt`; self-sampled from that stage-1 checkpoint with it.

    `pdgen data build alignment --out data/alignment --n 15000`: the image-instruction alignment subset:
    draft images inspected against their step's instruction, one positive for two negatives.

    `pdgen data build base --out data/base --n 20000`: the base stage's caption pairs (a caption and the
    scene it describes, `BaseDataModule`), with the tokenizer every later stage reads text with.

    `pdgen data build edit --out data/edit --n 5000`: edit samples (`EditDataModule`): an input image, an
    edit request (recolour, replace, add, remove, move, or two of them) and the world's plans that carry it
    out, one rendered step each.

    Each writes `train-*.tar` / `val-*.tar` shards, `tokenizer/` and `manifest.json`, and prints the paper's
    Table 1 statistics (`pdgen data stats DIR` prints them again).

    `pdgen data build multiturn --editor flux-kontext --flux_path FLUX.1-Kontext-dev --parser openai
    --judge openai --prompts prompts.txt --out data/real`: the paper's real-image multi-turn subset: each
    prompt parsed by the chat model, planned, drawn step by step by Flux-Kontext and every step judged;
    samples that fail are skipped and counted in the manifest (docs/data.md, "Real images"). Split across
    processes with `--num_shards N --shard_index I` (under torchrun: its WORLD_SIZE and RANK, one GPU each);
    a rerun resumes.

    Args:
        subset: which subset to build: base, multiturn, conflict, alignment or edit.
        out: the directory to write (default data/<subset>, for conflicts data/conflict/symbolic or
            data/conflict/self-sampled, where `ConflictDataModule(root="data/conflict")` reads them); it must
            not hold a shard set already.
        n: training samples (default 20000 base, 10000 multi-turn, 5000 conflict, 15000 alignment, 5000
            edit).
        augment: let the planner rewrite steps into edits (recolor, replace, remove, move), probability 0.5
            (multiturn and alignment).
        free_prompts: multiturn, conflict and alignment: the share of samples whose prompt is a random scene
            graph no GenEval template writes (mixed colours, coloured counts and relations, three objects);
            default 0.33.
        seed: the data seed; the same options give the same shards.
        world: the shapes world preset (default, large, all).
        val_size: held-out samples for validation.
        samples_per_shard: samples per shard.
        from_ckpt: conflict only: a stage-1 checkpoint to self-sample from (the paper's method).
        tokenizer: conflict only: the tokenizer to copy into the build; with --from_ckpt the one the
            checkpoint was trained with (default then data/multiturn/tokenizer). The recipe's DataModule
            passes one (configs/full.yaml) and reuses a build only if it was made with the same.
        parser: real images: how prompts become scene graphs: template (GenEval's grammar) or openai.
        editor: world (the exact shapes world) or flux-kontext (the real-image build).
        judge: real images: who checks each plan and step image: openai, world, or none (keep all).
        prompts: real images: a prompt file (.txt, or .jsonl with a "prompt" per line); `--n` samples are
            drawn from it in order, wrapping around.
        flux_path: the local FLUX.1-Kontext pipeline directory.
        device: the editor's device (default cuda:LOCAL_RANK under torchrun, else cuda).
        dtype: the editor's weights: bfloat16, float16 or float32.
        offload: none, model (components to the GPU in turn) or sequential (layer by layer).
        steps: Flux flow steps per edit.
        size: side of the images drawn, in pixels.
        batch_size: samples whose steps the editor draws together.
        base_url: the OpenAI-compatible endpoint of the parser and the judge.
        model: their chat model.
        api_key_env: the environment variable holding the API key.
        cache_dir: the chat replies' disk cache (a rerun asks nothing twice); default OUT/.chat-cache.
        num_shards: processes the build is split across (default WORLD_SIZE under torchrun, else 1).
        shard_index: this process's part (default RANK under torchrun, else 0).
    """
    from pdgen.data.multiturn import AUGMENT_FLAG
    from pdgen.data.shards import MANIFEST, stats_table

    if editor == "flux-kontext":
        if subset != "multiturn":
            raise UserError(f"--editor flux-kontext builds the multiturn subset, not {subset}")
        if free_prompts is not None:
            raise UserError("--free_prompts draws shapes-world graphs; the real-image build reads --prompts")
        real = dict(
            parser=parser, judge=judge, prompts=prompts, flux_path=flux_path, device=device, dtype=dtype,
            offload=offload, steps=steps, size=size, batch_size=batch_size, base_url=base_url, model=model,
            api_key_env=api_key_env, cache_dir=cache_dir,
        )  # fmt: skip
        out = out or Path("data/real")
        shards = (num_shards, shard_index)
        return _build_real(out, n or 1000, val_size, seed, augment, samples_per_shard, real, *shards)
    if (parser, judge, num_shards, shard_index) != ("template", "world", None, None):
        raise UserError(
            "--parser, --judge, --num_shards and --shard_index are options of the real-image build "
            "(--editor flux-kontext); the world's builds parse, judge and run exactly in one process"
        )
    if subset in ("base", "edit") and free_prompts is not None:
        raise UserError(
            f"--free_prompts is an option of the multiturn, conflict and alignment subsets, not {subset}"
        )
    free = {} if free_prompts is None else {"free_prompts": free_prompts}
    if subset != "conflict" and (from_ckpt is not None or tokenizer is not None):
        raise UserError(f"--from_ckpt and --tokenizer are options of the conflict subset, not of {subset}")
    augmentation = AUGMENT_FLAG if augment else 0.0
    if out is None:
        mode = "symbolic" if from_ckpt is None else "self-sampled"
        out = Path("data") / subset / mode if subset == "conflict" else Path("data") / subset
    if (out / MANIFEST).exists():
        raise UserError(f"{out} already holds a shard set ({MANIFEST}); choose another --out or delete it")
    if subset == "base":
        from pdgen.data.base import BaseSpec, build_base

        base = BaseSpec(n or 20_000, val_size, seed, world, samples_per_shard=samples_per_shard)
        manifest = build_base(out, base, progress=True)
    elif subset == "edit":
        from pdgen.data.edit import EditSpec, build_edit

        edit = EditSpec(n or 5000, val_size, seed, world, samples_per_shard)
        manifest = build_edit(out, edit, progress=True)
    elif subset == "multiturn":
        from pdgen.data.multiturn import MultiTurnSpec, build_multiturn

        spec = MultiTurnSpec(n or 10_000, val_size, seed, world, augmentation, samples_per_shard, **free)
        manifest = build_multiturn(out, spec, progress=True)
    elif subset == "conflict":
        from pdgen.data.conflict import ConflictSource, ConflictSpec, build_conflict

        if from_ckpt is not None and not from_ckpt.is_file():
            raise UserError(f"--from_ckpt {from_ckpt} is not a file")
        if from_ckpt is not None and tokenizer is None:
            tokenizer = Path("data/multiturn/tokenizer")
        conflict = ConflictSpec(n or 5000, val_size, seed, world, samples_per_shard=samples_per_shard, **free)
        source = ConflictSource(
            from_ckpt=None if from_ckpt is None else str(from_ckpt),
            tokenizer=None if tokenizer is None else str(tokenizer),
        )
        manifest = build_conflict(out, conflict, source, progress=True)
    else:
        from pdgen.data.alignment import AlignmentSpec, build_alignment

        alignment = AlignmentSpec(
            num_samples=n or 15_000,
            val_size=val_size,
            seed=seed,
            world=world,
            augment=augmentation,
            samples_per_shard=samples_per_shard,
            **free,
        )
        manifest = build_alignment(out, alignment, progress=True)
    shards = sum(len(entry["shards"]) for entry in manifest["splits"].values())
    return f"{subset} subset: {shards} shards in {out}\n\n{stats_table(manifest['stats'])}"


def _build_real(
    out: Path,
    n: int,
    val_size: int,
    seed: int,
    augment: bool,
    samples_per_shard: int,
    options: dict,
    num_shards: int | None,
    shard_index: int | None,
) -> str:
    """`build multiturn --editor flux-kontext`: this process's shards of the real-image subset."""
    import os

    from pdgen.data.multiturn import AUGMENT_FLAG
    from pdgen.data.prompts import read_prompts
    from pdgen.data.realimage import RealImageSpec, build_real
    from pdgen.data.shards import stats_table

    if options["prompts"] is None:
        raise UserError("--prompts FILE is required with --editor flux-kontext")
    if options["flux_path"] is None:
        raise UserError(
            "--flux_path DIR (the local FLUX.1-Kontext pipeline) is required with --editor flux-kontext"
        )
    num_shards = num_shards if num_shards is not None else int(os.environ.get("WORLD_SIZE", 1))
    shard_index = shard_index if shard_index is not None else int(os.environ.get("RANK", 0))
    device = options["device"] or f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    try:
        records = read_prompts(options["prompts"])
    except ValueError as error:  # the prompt file's problems, each naming the file and line
        raise UserError(str(error)) from error
    backends = _real_backends(options, out, device)
    described = {
        "parser": options["parser"] if options["parser"] != "openai" else f"openai:{options['model']}",
        "editor": f"flux-kontext:{Path(options['flux_path']).name}:{options['steps']}x{options['size']}px",
        "judge": options["judge"] if options["judge"] != "openai" else f"openai:{options['model']}",
    }
    spec = RealImageSpec(
        tuple(r.prompt for r in records), n, val_size, seed, AUGMENT_FLAG if augment else 0.0,
        samples_per_shard, options["batch_size"], described,
    )  # fmt: skip
    manifest = build_real(out, spec, backends, num_shards, shard_index, progress=True)
    if manifest is None:
        return f"part {shard_index + 1} of {num_shards} done in {out}; the last part to end writes a manifest"
    failures = ", ".join(f"{n} {cause}" for cause, n in manifest["failures"].items() if n) or "none"
    table = stats_table(manifest["stats"])
    done = f"{manifest['subset']} subset in {out}: {manifest['attempted']} attempted, skipped: {failures}"
    return f"{done}\n\n{table}"


def _real_backends(options: dict, out: Path, device: str):
    """The parser, editor and judge the options name."""
    from pdgen.data.realimage import Backends
    from pdgen.editors.flux_kontext import FluxKontextEditor
    from pdgen.judges.openai import ChatClient, OpenAIJudge
    from pdgen.judges.world import WorldJudge
    from pdgen.scene.llm_parser import OpenAIParser
    from pdgen.scene.parser import TemplateParser

    def client(name: str) -> ChatClient:
        cache = options["cache_dir"] or out / ".chat-cache"
        key = options["api_key_env"]
        return ChatClient(options["base_url"], options["model"], key, cache_dir=cache / name)

    parser = OpenAIParser(client("parser")) if options["parser"] == "openai" else TemplateParser()
    judges = {"openai": lambda: OpenAIJudge(client("judge")), "world": WorldJudge, "none": lambda: None}
    editor = FluxKontextEditor(
        options["flux_path"], device, options["dtype"], options["offload"], options["steps"],
        size=options["size"], auto_resize=options["size"] == 1024,
    )  # fmt: skip
    return Backends(parser, editor, judges[options["judge"]]())


def stats(root: Path, /, recount: bool = False) -> str:
    """Print the paper's Table 1 for built data: samples, prompt length, images, positives and negatives.

    `pdgen data stats data/` prints one table per shard set found in `data/` or up to two levels below it
    (`data/multiturn`, `data/conflict/symbolic`, `data/alignment`); `pdgen data stats data/multiturn` prints
    one. The figures are the manifest's; a shard set without a manifest (data you brought yourself, as
    `train-*.tar` shards in pdgen's layout, docs/data.md) or `--recount` counts the training shards: a
    sample is negative when its inspection has a `<refine>`, positive when it has an inspection without one.
    A recount also says how many samples could not be read, by cause, and how many of the manifest's are
    missing.

    Args:
        root: a shard set's directory, or a directory that holds several.
        recount: count the training shards instead of reading the manifests' figures.
    """
    from pdgen.data.shards import MANIFEST, read_manifest, stats_table

    if not root.is_dir():
        raise UserError(f"{root} is not a directory")
    found = sorted(
        {p.parent for pattern in ("*", "*/*", "*/*/*") for p in root.glob(pattern) if _is_shard_set_file(p)}
    )
    if not found:
        raise UserError(f"no shard set in {root} or below it (no {MANIFEST}, no train-*.tar)")
    tables = []
    for folder in found:
        try:
            manifest = read_manifest(folder)
        except ValueError as error:  # a manifest that is not JSON, or not pdgen's format
            raise UserError(str(error)) from error
        subset = (manifest or {}).get("subset", "shards")
        if manifest is not None and not recount:
            tables.append(f"{subset} ({folder})\n\n{stats_table(manifest['stats'])}")
            continue
        figures, skipped = _count(folder, manifest)
        recount_line = _recount_line(figures, skipped, manifest)
        tables.append(f"{subset} ({folder})\n\n{stats_table(figures)}\n\n{recount_line}")
    return "\n\n".join(tables)


COMMANDS = (parse, plan, build, stats)
"""The subcommands, in the order `pdgen --help` lists them."""


def _is_shard_set_file(path: Path) -> bool:
    return path.name == "manifest.json" or (path.name.startswith("train-") and path.suffix == ".tar")


def _count(folder: Path, manifest: dict | None) -> tuple[dict, SkipCounter]:
    """Table 1's figures from a shard set's training shards (positives and negatives by their inspection),
    and the samples that could not be read."""
    from pdgen.data.shards import ShardSource, SubsetStats, split_sample_counts, split_shards
    from pdgen.trajectory import Inspect

    if manifest:
        source = ShardSource(
            split_shards(folder, manifest, "train"),
            shuffle=False,
            samples_per_shard=split_sample_counts(folder, manifest, "train"),
        )
    else:
        source = ShardSource(sorted(folder.glob("train-*.tar")), shuffle=False)
    counted = SubsetStats()
    labels = {True: 0, False: 0}
    for _, trajectory in source.trajectories(0):
        counted.add(trajectory)
        for step in trajectory.steps:
            if isinstance(step, Inspect):
                labels[step.refine is None] += 1
                break
    if labels[True] or labels[False]:
        counted.positives, counted.negatives = labels[True], labels[False]
    return counted.table(), source.skipped


def _recount_line(figures: dict, skipped: SkipCounter, manifest: dict | None) -> str:
    """What a recount found against the manifest: ``"recount: 143 of the manifest's 200 training samples
    read; 57 sample(s) skipped: 57 truncated"``."""
    read = figures["total_samples"]
    if manifest is None:
        return f"recount: {read} training samples read (no manifest to compare with); {skipped.summary()}"
    listed = manifest["splits"]["train"]["samples"]
    verdict = "all read" if read == listed else f"{listed - read} MISSING"
    counts = f"{read} of the manifest's {listed} training samples read ({verdict})"
    return f"recount: {counts}; {skipped.summary()}"


def _prompts(prompt: str | None, file: Path | None) -> list[str]:
    import json

    if (prompt is None) == (file is None):
        raise UserError("give either a prompt or --file")
    if prompt is not None:
        return [prompt]
    try:
        lines = [line for line in Path(file).read_text().splitlines() if line.strip()]
    except OSError as error:
        raise UserError(f"cannot read --file {file} ({error})") from error
    if not str(file).endswith(".jsonl"):
        return lines
    prompts = []
    for number, line in enumerate(lines, 1):
        try:
            prompts.append(json.loads(line)["prompt"])
        except (ValueError, KeyError, TypeError) as error:  # a JSONDecodeError is a ValueError
            expected = 'expected a JSON object with a "prompt" on each line'
            raise UserError(f"{file}:{number}: {expected} ({error})") from error
    return prompts
