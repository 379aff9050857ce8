"""Build and inspect training data: prompts, scene graphs, plans, trajectory shards.

`pdgen data <name>`: every public function below is one subcommand (see `pdgen.commands`): its docstring
is the help, its typed parameters the options. Keep imports of heavy modules inside the functions so that
`pdgen data --help` stays fast.
"""

from pathlib import Path


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
