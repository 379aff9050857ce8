"""Build and inspect training data: prompts, scene graphs, plans, trajectory shards.

`pdgen data <name>`: every public function below is one subcommand (see `pdgen.commands`): its docstring
is the help, its typed parameters the options. Keep imports of heavy modules inside the functions so that
`pdgen data --help` stays fast.
"""

from pathlib import Path
from typing import Literal


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

    from pdgen.scene.parser import ParseError, parse_record

    try:
        return "\n".join(json.dumps(parse_record(p)) for p in _prompts(prompt, file))
    except ParseError as error:
        raise SystemExit(f"pdgen data parse: {error}") from error


def plan(
    prompt: str, augment: bool = False, seed: int = 0, render: Path | None = None, world: str = "default"
) -> str:
    """Plan a prompt step by step (<ins>/<des> per step); optionally render each step in the shapes world.

    Args:
        prompt: the prompt to plan.
        augment: rewrite some steps into edit operations (recolor, replace, remove, move).
        seed: seeds the plan order, the augmentation and the layout.
        render: a folder for each step's world image (`step_NN.png`) and a strip of all steps (`strip.png`).
        world: the world preset used with `--render` (default, all, small).
    """
    from pdgen.scene.parser import parse as parse_prompt
    from pdgen.scene.plan import plan as make_plan
    from pdgen.world.config import WorldConfig
    from pdgen.world.rollout import rollout, write_rollout

    probability = 0.5 if augment else 0.0
    try:
        graph = parse_prompt(prompt)
        if render is None:
            goals = make_plan(graph, seed, augment=probability)
        else:
            steps = rollout(graph, seed, WorldConfig.from_name(world), augment=probability)
            write_rollout(steps, render)
            goals = [s.goal for s in steps]
    except ValueError as error:  # ParseError, a class outside the world, no layout
        raise SystemExit(f"pdgen data plan: {error}") from error
    return "\n".join(f"{i}. [{g.op}] <ins>{g.ins}</ins><des>{g.des}</des>" for i, g in enumerate(goals))


def build(
    subset: Literal["multiturn"],
    /,
    out: Path = Path("data/multiturn"),
    n: int = 10_000,
    augment: bool = False,
    seed: int = 0,
    world: str = "default",
    val_size: int = 64,
    samples_per_shard: int = 500,
) -> str:
    """Build a training subset as webdataset shards, with a manifest and its statistics table.

    `pdgen data build multiturn --out data/multiturn --n 10000 [--augment]`: ShapesEval train prompts built
    step by step in the shapes world (Plan + Sketch per step), written as `train-*.tar` / `val-*.tar`
    shards with the embedded tokenizer (`tokenizer/`) and `manifest.json`; the same data
    `MultiTurnDataModule.prepare_data` builds for the same options. Prints the paper's Table 1 statistics.

    Args:
        subset: which subset to build: multiturn (the multi-turn generation subset).
        out: the directory to write; it must not hold a shard set already.
        n: training trajectories.
        augment: let the planner rewrite steps into edits (recolor, replace, remove, move), probability 0.5.
        seed: the data seed; the same options give the same shards.
        world: the shapes world preset (default, all, small).
        val_size: held-out trajectories for validation.
        samples_per_shard: trajectories per shard.
    """
    from pdgen.data.build import AUGMENT_FLAG, MultiTurnSpec, build_multiturn
    from pdgen.data.shards import MANIFEST, stats_table

    if (out / MANIFEST).exists():
        raise ValueError(f"{out} already holds a shard set ({MANIFEST}); choose another --out or delete it")
    spec = MultiTurnSpec(n, val_size, seed, world, AUGMENT_FLAG if augment else 0.0, samples_per_shard)
    manifest = build_multiturn(out, spec, progress=True)
    shards = sum(len(entry["shards"]) for entry in manifest["splits"].values())
    return f"{subset} subset: {shards} shards in {out}\n\n{stats_table(manifest['stats'])}"


def _prompts(prompt: str | None, file: Path | None) -> list[str]:
    import json

    if (prompt is None) == (file is None):
        raise ValueError("give either a prompt or --file")
    if prompt is not None:
        return [prompt]
    lines = [line for line in Path(file).read_text().splitlines() if line.strip()]
    if str(file).endswith(".jsonl"):
        return [json.loads(line)["prompt"] for line in lines]
    return lines
