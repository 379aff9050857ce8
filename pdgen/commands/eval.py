"""Score generated images: GenEval rules, ShapesEval on the embedded world, WISE.

`pdgen eval <name>`: the functions in `COMMANDS` are the subcommands (see `pdgen.commands`): a docstring
is the help, the typed parameters the options. Keep imports of heavy modules inside the functions so that
`pdgen --help` and `pdgen eval --help` stay fast.

Every subcommand prints a table and writes the whole report as JSON: the summary, the per-image rows
(GenEval's `results.jsonl` fields, or WISE's scores with the judge's raw reply and failed tries) and, when
the image folder is a pdgen prediction folder, the cost summary it records, which the table also shows
beside the scores. ShapesEval and GenEval write it beside the images (`IMAGES/eval_shapes.json`,
`IMAGES/eval_geneval.json`, where `pdgen view html IMAGES` finds the verdicts) unless `--out` says
otherwise; WISE writes it only to `--out`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pdgen.errors import UserError


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

    Prints the per-tag accuracies, `overall` (the mean of the six tag scores) and, for a pdgen prediction
    folder, the mean cost of a sample.

    Args:
        images: the folder (`00000/metadata.jsonl`, `00000/samples/0000.png`, ...).
        truth: first fill `images` with the world's own renders of the ShapesEval split, each with its
            rollout as trajectory (a sanity check: they score 1.0; and a folder for `pdgen view html`).
        split: the ShapesEval split rendered by `--truth` (train or test).
        world: the world preset (default, large, all).
        per_tag: prompts per tag rendered by `--truth`.
        samples: images per prompt rendered by `--truth`.
        out: write the report (summary, costs, per-image rows) to this JSON file; by default
            `IMAGES/eval_shapes.json`, where `pdgen view html IMAGES` shows each image's verdict.
    """
    from pdgen.eval.predictions import is_prediction_folder
    from pdgen.eval.shapes import score_shapes, write_ground_truth
    from pdgen.world.config import WorldConfig
    from pdgen.world.prompts import shapes_eval_prompts

    if images is None:
        raise UserError("--images DIR is required")
    config = WorldConfig.from_name(world)
    if truth:
        write_ground_truth(images, shapes_eval_prompts(split, config, per_tag), config, samples)
    rows, summary = score_shapes(images, config)
    source: dict[str, Any] = {"world": world}
    if is_prediction_folder(images):
        from pdgen.eval.process import score_process

        source["process"] = score_process(images, config).to_dict()
    report = _geneval_report("shapes", images, rows, summary, out, source)
    return report + "".join(f"\n{line}" for line in _process_lines(source.get("process")))


def geneval(
    images: Path | None = None,
    detector: str | None = None,
    results: Path | None = None,
    out: Path | None = None,
) -> str:
    """GenEval: score a GenEval-layout folder with a detector back end, or summarise the official scorer.

    Two ways, exactly one per run:

    - `--detector module:Class`: pdgen's rules engine over your back end, a class built with no
      arguments that implements `pdgen.eval.geneval.Detector` (`detect`, `classify_colors`). Scores from
      any detector but the official Mask2Former + CLIP pair are not comparable with published numbers.
    - `--results FILE`: the `results.jsonl` that djghosh13/geneval's `evaluate_images.py` wrote for the
      folder (comparable with the literature); pdgen prints its summary (overall = mean of the tag means).

    Args:
        images: the folder scored (`00000/metadata.jsonl`, `00000/samples/0000.png`, ...); with
            `--results` optional (the folder of the rows' file names), read for pdgen's cost figures.
        detector: the back end, as `package.module:ClassName`.
        results: the official scorer's output, one JSON row per image (`tag`, `correct`, ...).
        out: write the report (summary, costs, per-image rows) to this JSON file; by default
            `IMAGES/eval_geneval.json` when the image folder is known.
    """
    from pdgen.eval.geneval import score_folder, summarize

    if (detector is None) == (results is None):
        raise UserError("give exactly one of --detector module:Class and --results FILE")
    if detector is not None:
        if images is None:
            raise UserError("--images DIR is required with --detector")
        rows = score_folder(images, _load_detector(detector))
        source = {"detector": detector}
    else:
        rows = _read_results(results)
        images = images if images is not None else _folder_of(rows)
        source = {"results": str(results)}
    return _geneval_report("geneval", images, rows, summarize(rows), out, source)


def wise(
    images: Path | None = None,
    prompts: list[Path] | Path | None = None,
    base_url: str = "https://api.openai.com/v1",
    judge: str = "gpt-4o-2024-05-13",
    api_key_env: str = "OPENAI_API_KEY",
    schema: str = "auto",
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 1.0,
    cache_dir: Path | None = None,
    out: Path | None = None,
    resume: bool = False,
) -> str:
    """WISE: judge one image per prompt with the legacy rubric through an OpenAI-compatible endpoint.

    Prints the six category scores, the weighted overall (WISE's formula) and the unweighted one (the
    mean of the categories, which BAGEL-lineage papers report), and how many prompts failed to be judged.

    Args:
        images: `<prompt_id>.png` per prompt (WISE's layout), or a pdgen prediction folder whose
            metadata.jsonl carries each prompt's `prompt_id`.
        prompts: WISE prompt files (JSON arrays; legacy or verified release): `--prompts FILE` or
            `--prompts '[culture.json, science.json]'`. WISE has no licence, so pdgen ships none.
        base_url: the API root (OpenAI, Azure, or a local vLLM server).
        judge: the pinned judge model id (legacy protocol: gpt-4o-2024-05-13).
        api_key_env: the environment variable holding the API key.
        schema: the prompt files' release: auto, legacy or verified.
        timeout: seconds to wait for one reply.
        retries: retries per image of a timeout, an HTTP 429/5xx or a reply without the three scores.
        backoff: seconds before the first retry, doubled for each next one.
        cache_dir: cache the judge's replies here (a rerun costs nothing) and log every raw reply.
        out: write the report (summary, per-prompt rows with raw replies and failed tries) to this JSON
            file.
        resume: reuse the rows of `--out` that have scores, judging only the others.
    """
    import json
    import sys

    from pdgen.eval.wise import WiseJudge, judge_images, load_prompts, summarize
    from pdgen.judges.openai import ChatClient

    if images is None or not prompts:
        raise UserError("--images DIR and --prompts FILE (or '[FILE, ...]') are required")
    files = [prompts] if isinstance(prompts, Path) else list(prompts)
    prompt_set = load_prompts(files, schema)
    previous = []
    if resume and out is not None and out.is_file():
        earlier = json.loads(out.read_text())
        if (earlier.get("judge"), earlier.get("prompts_sha256")) != (judge, prompt_set.sha256):
            raise UserError(
                f"--resume: {out} was judged by {earlier.get('judge')} on other prompt files or another "
                f"judge than {judge}; write to another --out"
            )
        previous = earlier["rows"]
    client = ChatClient(
        base_url,
        model=judge,
        api_key_env=api_key_env,
        timeout=timeout,
        max_retries=retries,
        backoff=backoff,
        cache_dir=cache_dir,
    )
    rows = judge_images(prompt_set, images, WiseJudge(client), previous, progress=_progress)
    print(file=sys.stderr)
    summary = summarize(rows, prompt_set.schema)
    reported = sorted({row["judge_model"] for row in rows if row.get("judge_model")})
    report = {
        "benchmark": "wise",
        "images": str(images),
        "prompts": [str(path) for path in files],
        "prompts_sha256": prompt_set.sha256,
        "judge": judge,
        "judge_reported": reported,
        "summary": summary,
        "costs": _costs(images),
        "rows": rows,
    }
    if out is not None:
        _write_json(out, report)
    return _wise_table(report)


def edits(
    images: Path | None = None,
    truth: bool = False,
    world: str = "default",
    per_type: int = 20,
    seed: int = 0,
    out: Path | None = None,
) -> str:
    """ShapesEdit: score edited world images per edit type: did the change happen, and nothing else change?

    `IMAGES` is a prediction folder whose prompts are ShapesEdit cases (`pdgen eval edit-cases` writes them
    as a cases.jsonl that `pdgen predict` reads with its input images). Prints, per edit type and overall
    (the mean of the types), the share of images that are correct (the request carried out and nothing else
    changed), of requests carried out and of scenes preserved, each with its number of images and 95 %
    interval, and the mean cost of a sample.

    Args:
        images: the prediction folder.
        truth: first fill `images` with the world's exact edits of the cases (they score 1.0: a check of the
            referee, and a folder for `pdgen view html`).
        world: the world preset (default, large, all).
        per_type: cases per edit type written by `--truth`.
        seed: the case seed of `--truth`.
        out: write the report (summary, costs, per-image rows) to this JSON file; by default
            `IMAGES/eval_edits.json`, where `pdgen view html IMAGES` shows each image's verdict.
    """
    from pdgen.eval.edits import edit_cases, score_edits, write_ground_truth
    from pdgen.eval.predictions import report_path
    from pdgen.world.config import WorldConfig

    if images is None:
        raise UserError("--images DIR is required")
    config = WorldConfig.from_name(world)
    if truth:
        write_ground_truth(images, edit_cases(per_type, config, seed))
    report = score_edits(images, config)
    summary = report.summary()
    costs = _costs(images)
    out = out if out is not None else report_path(images, "edits")
    _write_json(out, {**report.to_dict(), "images": str(images), "world": world, "costs": costs})
    lines = [("type", "correct", "images", "95% interval", "requested", "preserved")]
    for kind, rate in summary["correct"].items():
        low, high = rate["interval_95"]
        requested, preserved = summary["requested"][kind]["rate"], summary["preserved"][kind]["rate"]
        lines.append((kind, f"{rate['rate']:.3f}", str(rate["n"]), f"{low:.2f}-{high:.2f}",
                      f"{requested:.3f}", f"{preserved:.3f}"))  # fmt: skip
    return "\n".join(
        [
            f"shapes_edit ({images})",
            _table(lines),
            "(correct: the request carried out and nothing else changed; overall: mean of the types)",
            *_cost_lines(costs),
            f"report: {out}",
        ]
    )


def edit_cases(
    out: Path = Path("shapesedit"), world: str = "default", per_type: int = 20, seed: int = 0
) -> str:
    """Write ShapesEdit's cases for `pdgen predict`: a cases.jsonl with one input image per request.

    `pdgen eval edit-cases --out shapesedit`, then `pdgen predict -c configs/edit.yaml -c configs/predict.yaml
    --ckpt_path CKPT --data.path shapesedit/cases.jsonl --trainer.default_root_dir runs/edit-predictions`
    and `pdgen eval edits --images runs/edit-predictions`. Requests come from the test split of edit requests,
    which the edit subset never trains on; `per_type` of each type: recolor, replace, add, remove, move and
    two-step combos.

    Args:
        out: the folder to write (`cases.jsonl`, `inputs/NNNNN.png`).
        world: the world preset (default, large, all).
        per_type: cases per edit type.
        seed: the case seed; the same options give the same cases.
    """
    from collections import Counter

    from pdgen.eval.edits import edit_cases as draw_cases
    from pdgen.eval.edits import write_cases
    from pdgen.world.config import WorldConfig

    misread: Counter[str] = Counter()
    cases = draw_cases(per_type, WorldConfig.from_name(world), seed, misread)
    path = write_cases(out, cases)
    dropped = f"; {sum(misread.values())} drawn again because the referee misreads the world's own render"
    return f"{path}: {len(cases)} cases, {per_type} per edit type{dropped if misread else ''}"


def wise_prompts(prompts: list[Path] | Path | None = None, out: Path = Path("wise_prompts.jsonl")) -> str:
    """Write WISE prompt files as a .jsonl that `pdgen predict` reads (without the judge's explanations).

    Each line holds `prompt`, `prompt_id`, `category`, `subcategory`: the prediction folder's
    metadata.jsonl then carries the `prompt_id` that `pdgen eval wise` matches images by. The
    `Explanation` is left out: it is the answer, and feeding it to the generator would leak it.

    Args:
        prompts: WISE prompt files: `--prompts FILE` or `--prompts '[A.json, B.json]'`.
        out: the .jsonl to write.

    Returns:
        The path written and the number of prompts.
    """
    from pdgen.eval.samples import write_jsonl
    from pdgen.eval.wise import generation_records, load_prompts

    if not prompts:
        raise UserError("--prompts FILE (or '[FILE, ...]') is required")
    prompt_set = load_prompts([prompts] if isinstance(prompts, Path) else list(prompts))
    write_jsonl(out, generation_records(prompt_set))
    return f"{out} ({len(prompt_set.prompts)} {prompt_set.schema.name} prompts)"


COMMANDS = (shapes, geneval, wise, edits, edit_cases, wise_prompts)
"""The subcommands, in the order `pdgen --help` lists them."""


# --------------------------------------------------------------------------------------------------------
# Helpers: detector loading, results files, costs, tables


def _progress(done: int, total: int) -> None:
    import sys

    print(f"\rjudged {done}/{total}", end="", file=sys.stderr, flush=True)


def _load_detector(spec: str) -> Any:
    """An instance of the `module:Class` back end, or a UserError that names what is missing."""
    import importlib

    module_name, colon, class_name = spec.partition(":")
    if not colon or not module_name or not class_name:
        raise UserError(f"--detector {spec}: expected module:Class, e.g. my_backends.mask2former:Mask2Former")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = f" (the module {error.name!r} is not installed)" if error.name else ""
        raise UserError(
            f"--detector {spec}: cannot import {module_name!r}{missing}: {error}. Install the package that "
            "provides the back end; the official GenEval one needs mmdet 2.x and open_clip "
            "(see docs/evaluation.md)"
        ) from error
    cls = getattr(module, class_name, None)
    if cls is None:
        raise UserError(f"--detector {spec}: module {module_name!r} has no {class_name!r}")
    if not isinstance(cls, type):
        raise UserError(f"--detector {spec}: {class_name} is a {type(cls).__name__}, not a class")
    try:
        backend = cls()
    except TypeError as error:  # a constructor that wants arguments
        raise UserError(
            f"--detector {spec}: {class_name}() failed ({error}); the back end is built with no arguments"
        ) from error
    missing_methods = [
        name for name in ("detect", "classify_colors") if not callable(getattr(backend, name, None))
    ]
    if missing_methods:
        raise UserError(
            f"--detector {spec}: {class_name} lacks {', '.join(missing_methods)} "
            "(see the protocol pdgen.eval.geneval.Detector)"
        )
    return backend


def _read_results(path: Path) -> list[dict[str, Any]]:
    """The official scorer's rows; each needs `tag` and `correct`."""
    import json

    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise UserError(f"cannot read GenEval results {path} ({error})") from error
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: not a JSON row ({error})") from error
        if not isinstance(row, dict) or "tag" not in row or not isinstance(row.get("correct"), bool):
            raise UserError(
                f"{path}:{number}: expected a GenEval result row with 'tag' and a boolean 'correct'"
            )
        rows.append(row)
    if not rows:
        raise UserError(f"{path}: no result rows")
    return rows


def _folder_of(rows: list[dict[str, Any]]) -> Path | None:
    """The image folder the official rows were scored from (`DIR/00000/samples/0000.png`), if it exists."""
    filename = rows[0].get("filename")
    if not filename or len(Path(filename).parents) < 3:
        return None
    folder = Path(filename).parents[2]
    return folder if folder.is_dir() else None


def _costs(images: Path | None) -> dict[str, float] | None:
    from pdgen.eval.predictions import cost_summary, is_prediction_folder

    return cost_summary(images) if images is not None and is_prediction_folder(images) else None


def _write_json(path: Path, document: dict[str, Any]) -> None:
    import json

    from pdgen.io import write_atomic

    write_atomic(path, (json.dumps(document, indent=1) + "\n").encode("utf-8"))


def _geneval_report(
    benchmark: str,
    images: Path | None,
    rows: list[dict[str, Any]],
    summary: dict[str, float],
    out: Path | None,
    source: dict[str, Any],
) -> str:
    """Write the JSON report (to `out`, or beside the images) and return the table: per tag with its 95 %
    interval, overall, image mean, costs."""
    from pdgen.eval.predictions import report_path
    from pdgen.eval.process import wilson_interval

    counts: dict[str, int] = {}
    correct: dict[str, int] = {}
    for row in rows:
        counts[row["tag"]] = counts.get(row["tag"], 0) + 1
        correct[row["tag"]] = correct.get(row["tag"], 0) + bool(row["correct"])
    intervals = {tag: wilson_interval(correct[tag], n) for tag, n in counts.items()}
    if counts:
        intervals["overall"] = _mean_interval(list(intervals.values()))
    costs = _costs(images)
    report = {
        "benchmark": benchmark,
        "images": None if images is None else str(images),
        **source,
        "summary": summary,
        "images_per_tag": counts,
        "intervals_95": intervals,
        "costs": costs,
        "rows": rows,
    }
    out = out if out is not None or images is None else report_path(images, benchmark)
    if out is not None:
        _write_json(out, report)

    def interval(tag: str) -> str:
        low, high = intervals[tag]
        return f"{low:.2f}-{high:.2f}"

    lines = [("tag", "score", "images", "95% interval")]
    lines += [
        (tag, f"{summary[tag]:.3f}", str(counts[tag]), interval(tag)) for tag in summary if tag in counts
    ]
    lines += [
        ("overall", f"{summary['overall']:.3f}", "", interval("overall") if counts else ""),
        ("image_mean", f"{summary['image_mean']:.3f}", str(len(rows))),
    ]
    return "\n".join(
        [
            f"{benchmark} ({images})",
            _table(lines),
            "(overall: mean of the tag scores, GenEval's score; image_mean: mean over all images)",
            *_cost_lines(costs),
            *([f"report: {out}"] if out is not None else []),
        ]
    )


def _mean_interval(intervals: list[tuple[float, float]]) -> tuple[float, float]:
    """An interval for GenEval's overall, the mean of the tag rates: the mean of the tags' own 95 % intervals.

    Conservative (the tags' errors partly cancel in a mean), and never zero wide where a tag's is not: a
    normal approximation would claim certainty from a tag that scored all or nothing on a few images.
    """
    return sum(low for low, _ in intervals) / len(intervals), sum(high for _, high in intervals) / len(
        intervals
    )


def _process_lines(process: dict[str, Any] | None) -> list[str]:
    """The process table of a ShapesEval report: planned right, complete plans, inspections that agree."""
    if process is None:
        return []
    if process["trajectories"] == process["unreadable"]:
        return [
            f"process: none of the {process['trajectories']} samples has a trajectory to score (single pass)"
        ]

    def rate(figure: dict[str, Any]) -> tuple[str, str, str]:
        if not figure["n"]:
            return "-", "0", ""
        low, high = figure["interval_95"]
        return f"{figure['rate']:.3f}", str(figure["n"]), f"{low:.2f}-{high:.2f}"

    lines = [
        ("process", "rate", "n", "95% interval"),
        ("planned right", *rate(process["planned_right"])),
        ("  by prompt", *rate(process["prompts_planned_right"])),
        ("complete plans", *rate(process["complete_plans"])),
        ("inspections agree", *rate(process["inspections_agree"])),
    ]
    by_tag = [
        ("process by tag", "planned right", "n", "95% interval", "inspections agree", "n", "95% interval")
    ]
    by_tag += [
        (tag, *rate(figures["planned_right"]), *rate(figures["inspections_agree"]))
        for tag, figures in process["by_tag"].items()
    ]
    readable = process["trajectories"] - process["unreadable"]
    return [
        _table(lines),
        f"(of {process['trajectories']} trajectories, {process['unreadable']} unreadable; per readable one: "
        f"{process['images_per_trajectory']:.2f} images, {process['inspections_per_trajectory']:.2f} "
        f"inspections; planned right: every object added, nothing changed after the last, over all "
        f"{process['trajectories']}, an unreadable one counting as wrong; {readable} read; by prompt: every "
        "sample of the prompt planned right, n prompts, the honest n where text is greedy)",
        _table(by_tag),
    ]


def _wise_table(report: dict[str, Any]) -> str:
    from pdgen.eval.wise import SCHEMAS

    summary = report["summary"]
    schema = SCHEMAS[summary["schema"]]
    lines = [("category", "score", "images", "weight")]
    lines += [
        (name, f"{value['score']:.3f}", str(value["images"]), f"{schema.weight_of(name):.3f}")
        for name, value in summary["categories"].items()
    ]
    lines += [
        ("weighted", f"{summary['overall_weighted']:.3f}", str(summary["judged"]), ""),
        ("unweighted", f"{summary['overall_unweighted']:.3f}", str(summary["judged"]), ""),
    ]
    failed = f"; FAILED {summary['failed']}: prompt_id {summary['failed_ids']}" if summary["failed"] else ""
    text = [
        f"wise ({report['images']}, {schema.name} prompts, judge {report['judge']})",
        _table(lines),
        "(weighted: WISE's overall, category weights; unweighted: mean of the categories, as BAGEL reports)",
        f"judged {summary['judged']} of {summary['prompts']} prompts{failed}"
        + ("" if summary["complete"] else " (not the full 1,000: not comparable with published numbers)"),
    ]
    return "\n".join(text + _cost_lines(report["costs"]))


def _cost_lines(costs: dict[str, float] | None) -> list[str]:
    from pdgen.eval.predictions import COST_FIGURES

    if costs is None:
        return []
    lines = [(label, f"{costs[key]:.2f}") for label, key in COST_FIGURES if key in costs]
    return [f"cost per sample (mean over {costs.get('prompts', '?')} samples)", _table(lines, header=False)]


def _table(lines: list[tuple[str, ...]], header: bool = True) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(max(map(len, lines)))]
    text = []
    for number, line in enumerate(lines):
        cells = [cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)]
        text.append("  ".join(cells).rstrip())
        if header and number == 0:
            text.append("  ".join("-" * width for width in widths))
    return "\n".join(text)
