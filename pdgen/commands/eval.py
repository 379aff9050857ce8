"""Score generated images: GenEval rules, ShapesEval on the embedded world, WISE.

`pdgen eval <name>`: every public function below is one subcommand (see `pdgen.commands`): its docstring
is the help, its typed parameters the options. Keep imports of heavy modules inside the functions so that
`pdgen eval --help` stays fast.
"""

from pathlib import Path


def shapes(
    images: Path | None = None,
    truth: bool = False,
    split: str = "test",
    world: str = "default",
    per_tag: int = 50,
    samples: int = 4,
    out: Path | None = None,
) -> str:
    """ShapesEval: score a GenEval-layout folder of shapes-world images with the world detector.

    Prints the per-tag accuracies and `overall` (the mean of the six tag scores) as JSON.

    Args:
        images: the folder (`00000/metadata.jsonl`, `00000/samples/0000.png`, ...).
        truth: first fill `images` with the world's own renders of the ShapesEval split (a sanity check:
            they score 1.0).
        split: the ShapesEval split rendered by `--truth` (train or test).
        world: the world preset (default, all, small).
        per_tag: prompts per tag rendered by `--truth`.
        samples: images per prompt rendered by `--truth`.
        out: also write GenEval's per-image result rows to this .jsonl file.
    """
    import json

    from pdgen.eval.samples import write_jsonl
    from pdgen.eval.shapes import score_shapes, write_ground_truth
    from pdgen.world.config import WorldConfig
    from pdgen.world.prompts import shapes_eval_prompts

    if images is None:
        raise SystemExit("pdgen eval shapes: --images DIR is required")
    config = WorldConfig.from_name(world)
    if truth:
        write_ground_truth(images, shapes_eval_prompts(split, config, per_tag), config, samples)
    rows, summary = score_shapes(images, config)
    if out is not None:
        write_jsonl(out, rows)
    return json.dumps(summary, indent=1)
