"""Look at trajectories: render them as HTML pages with their intermediate images.

`pdgen view <name>`: the functions in `COMMANDS` are the subcommands (see `pdgen.commands`): a docstring
is the help, the typed parameters the options. This module imports only PIL and light pdgen modules, so
`pdgen --help` reads it fast (a prediction folder's cost summary also imports `pdgen.inference`).
"""

from __future__ import annotations

import base64
import html as html_text
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from pdgen.errors import UserError
from pdgen.eval.predictions import (
    COST_FIGURES,
    PAGE_NAME,
    Prediction,
    cost_summary,
    is_prediction_folder,
    read_predictions,
    report_path,
)
from pdgen.images import open_image
from pdgen.io import write_atomic
from pdgen.trajectory import JSON_NAME, Inspect, Plan, Refine, Sketch, Trajectory


def html(
    path: Path,
    out: Path | None = None,
    limit: int = 50,
    size: int = 128,
    results: Path | None = None,
) -> str:
    """Write one HTML page that shows trajectories step by step, with their images inline.

    Each trajectory is a row of cards: the prompt (and input image), then every Plan, Sketch, Inspect and
    Refine in order; the last image, the answer, is outlined. For a prediction folder (what `pdgen
    predict` writes) each sample's row also shows its costs and, given scores, its verdict; the page
    opens with the folder's cost summary. Images are data URLs: the page needs no server and no other
    file.

    Args:
        path: a prediction folder (`00000/metadata.jsonl`, `00000/trajectory/0000/trajectory.json`, ...),
            a trajectory directory (as `Trajectory.save` writes it), a webdataset `.tar` shard of
            trajectory samples (`KEY.trajectory.json`, `KEY.00.png`, …), or a folder searched for both.
        out: the HTML file to write; by default `trajectories.html` inside the folder shown (beside a
            `.tar` shard: the shard's name with `.html`).
        limit: show at most this many trajectories.
        size: the longer side of every image on the page, in screen pixels; small images are enlarged
            with sharp pixels.
        results: per-image scores to show with a prediction folder: GenEval's `results.jsonl` or the
            JSON report of `pdgen eval` (rows are matched by their image's file name); when this is
            not given, the first of `PATH/results.jsonl`, `PATH/eval_shapes.json` (what `pdgen eval shapes
            --images PATH` writes), `PATH/eval_edits.json` and `PATH/eval_geneval.json` that exists is read.

    Returns:
        The path of the page written.
    """
    if is_prediction_folder(path):
        header, sections = _prediction_sections(path, limit, size, results)
    else:
        header, sections = "", []
        for title, load in _trajectories(path):
            if len(sections) == limit:
                break
            sections.append(
                _section(title, _cards_or_problem(title, lambda load=load: _trajectory_cards(load(), size)))
            )
    if not sections:
        raise UserError(
            f"no trajectories in {path} (looked for prediction folders, trajectory.json and .tar shards)"
        )
    page = _PAGE.format(count=len(sections), header=header, sections="\n".join(sections))
    if out is None:
        out = path / PAGE_NAME if path.is_dir() else path.with_suffix(".html")
    write_atomic(out, page.encode("utf-8"))
    return str(out)


COMMANDS = (html,)
"""The subcommands: one, so `pdgen view DIR` is `pdgen view html DIR`."""


def _prediction_sections(path: Path, limit: int, size: int, results: Path | None) -> tuple[str, list[str]]:
    """The page header (cost summary, score summary) and one section per sample of a prediction folder."""
    if results is None:
        reports = [report_path(path, name) for name in ("shapes", "edits", "geneval")]
        found = [path / "results.jsonl", *reports]
        results = next((file for file in found if file.is_file()), None)
    scores = _read_scores(results) if results is not None else {}
    sections = []
    for prediction in read_predictions(path)[:limit]:
        metadata = prediction.folder.metadata
        tag = f" · {metadata['tag']}" if "tag" in metadata else ""
        title = f"{prediction.index:05d} · sample {prediction.sample}{tag}"
        if prediction.trajectory is not None:
            where = prediction.trajectory
            cards = _cards_or_problem(where, lambda at=where: _trajectory_cards(Trajectory.load(at), size))
        else:
            folder, sample = prediction.folder.path, prediction
            cards = _cards_or_problem(folder, lambda sample=sample: _untraced_cards(sample, size))
        extra = []
        if (row := scores.get((prediction.index, prediction.sample))) is not None:
            extra.append(_score_card(row))
        if prediction.costs is not None:
            extra.append(_costs_card(prediction.costs))
        sections.append(_section(title, cards[:1] + extra + cards[1:]))
    parts = []
    if (summary := cost_summary(path)) is not None:
        figures = " · ".join(f"{label} {summary[key]:.2f}" for label, key in COST_FIGURES if key in summary)
        parts.append(f"<p>Mean cost per sample ({summary.get('prompts', '?')} samples): {figures}</p>")
    if scores:
        correct = [row["correct"] for row in scores.values() if "correct" in row]
        wiscores = [row["wiscore"] for row in scores.values() if row.get("wiscore") is not None]
        if correct:
            parts.append(
                f"<p>Correct: {sum(correct)} of {len(correct)} images ({html_text.escape(str(results))})</p>"
            )
        if wiscores:
            mean = sum(wiscores) / len(wiscores)
            parts.append(f"<p>Mean WiScore {mean:.3f} over {len(wiscores)} images</p>")
    return "\n".join(parts), sections


def _untraced_cards(prediction: Prediction, size: int) -> list[str]:
    """A sample without a trajectory (single pass, or output that is not a valid trajectory): the prompt,
    what the generation record says (stop reason, error, text), every image drawn, the final image."""
    generation = prediction.generation or {}
    cards = [
        _text_card(
            "prompt", "Prompt", str(generation.get("prompt", prediction.folder.metadata.get("prompt")))
        )
    ]
    notes = [
        f"{key.replace('_', ' ')}: {generation[key]}"
        for key in ("mode", "stop_reason", "error")
        if generation.get(key)
    ]
    if generation.get("text"):
        notes.append(str(generation["text"]))
    if notes:
        cards.append(_text_card("inspect", "Generation (no trajectory)", *notes))
    # An edit's input image comes first, as in a trajectory. The final image is one of the drawn ones when
    # the record names it; otherwise (nothing drawn) the sample's samples/NNNN.png is a blank stand-in,
    # shown so the page says what the scorer saw.
    final, source = generation.get("final_image"), generation.get("input_image")
    drawn = [path for path in prediction.drawn if path.name != source]
    if source is not None and len(drawn) < len(prediction.drawn):
        cards.insert(
            1, _picture(open_image(prediction.drawn[0].with_name(source)).convert("RGB"), "input", size)
        )
    for number, path in enumerate(drawn):
        image = open_image(path).convert("RGB")
        cards.append(_picture(image, f"image {number}", size, answer=path.name == final))
    if prediction.image is not None and final not in {path.name for path in prediction.drawn}:
        cards.append(_picture(open_image(prediction.image).convert("RGB"), "final image", size, answer=True))
    return cards


def _cards_or_problem(where: str | Path, make_cards: Callable[[], list[str]]) -> list[str]:
    """The cards of one sample, or, when its files cannot be read (a damaged image or trajectory), one card
    that names the file and what is wrong: one bad sample never costs the page."""
    try:
        return make_cards()
    except (ValueError, OSError) as error:  # TrajectoryError and UnreadableImage are ValueErrors
        return [_text_card("inspect", "Not shown: this sample cannot be read", f"{where}: {error}")]


def _read_scores(path: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """Score rows keyed by (prompt number, sample number), read from their `NNNNN/samples/KKKK.png` names.

    Rows of other names (WISE's flat `<prompt_id>.png`) have no trajectory to sit beside and are skipped.
    """
    try:
        text = path.read_text()
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)["rows"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{path}: expected GenEval result rows (.jsonl) or a pdgen eval report ({error})"
        ) from error
    scores = {}
    for row in rows:
        name = Path(str(row.get("filename") or ""))
        in_layout = len(name.parents) >= 3 and name.parent.name == "samples"
        if in_layout and name.parents[1].name.isdigit() and name.stem.isdigit():
            scores[(int(name.parents[1].name), int(name.stem))] = row
    return scores


def _trajectories(path: Path) -> Iterator[tuple[str, Callable[[], Trajectory]]]:
    """Every trajectory under `path` with a title, in file-name order; each is read when its loader is
    called, so that one that cannot be read is shown as such (`_cards_or_problem`)."""
    if path.suffix == ".tar":
        for key, files in _tar_samples(path):
            yield f"{path} / {key}", lambda files=files: Trajectory.from_files(files)
    elif (path / JSON_NAME).is_file():
        yield str(path), lambda: Trajectory.load(path)
    elif path.is_dir():
        found = sorted({file.parent for file in path.rglob(JSON_NAME)} | set(path.rglob("*.tar")))
        for item in found:
            yield from _trajectories(item)
    else:
        raise UserError(f"{path} is neither a trajectory directory, a .tar shard nor a folder")


def _tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A webdataset shard's samples: member `KEY.rest` is file `rest` of sample `KEY`.

    webdataset writes a sample's files next to each other, so a sample ends where the key changes.
    """
    key, files = None, {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            member_key, _, name = Path(member.name).name.partition(".")
            if member_key != key and files:
                yield key, files
                files = {}
            key = member_key
            extracted = tar.extractfile(member)
            assert extracted is not None  # a regular file always has contents
            files[name] = extracted.read()
    if files:
        yield key, files


def _section(title: str, cards: list[str]) -> str:
    return f'<section><h2>{html_text.escape(title)}</h2><div class="steps">{"".join(cards)}</div></section>'


def _picture(image: Image.Image, label: str, size: int, answer: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    source = base64.b64encode(buffer.getvalue()).decode("ascii")
    width = round(size * image.width / max(image.size))
    outline = " answer" if answer else ""
    return (
        f'<figure class="image{outline}"><img src="data:image/png;base64,{source}" width="{width}">'
        f"<figcaption>{html_text.escape(label)}</figcaption></figure>"
    )


def _text_card(kind: str, heading: str, *paragraphs: str) -> str:
    """A card of escaped paragraphs; `kind` is its CSS class."""
    body = "".join(f"<p>{html_text.escape(p)}</p>" for p in paragraphs)
    return f'<div class="card {kind}"><b>{heading}</b>{body}</div>'


def _trajectory_cards(trajectory: Trajectory, size: int) -> list[str]:
    answer = trajectory.answer

    def plan_card(plan: Plan, kind: str) -> str:
        return (
            f'<div class="card {kind.lower()}"><b>{kind}</b><p><i>ins</i> {html_text.escape(plan.ins)}</p>'
            f"<p><i>des</i> {html_text.escape(plan.des)}</p></div>"
        )

    cards = [_text_card("prompt", "Prompt", trajectory.prompt)]
    if trajectory.input_image is not None:
        cards.append(_picture(trajectory.input_image, "input", size))
    for index, step in enumerate(trajectory.steps):
        if isinstance(step, Plan):
            cards.append(plan_card(step, "Plan"))
        elif isinstance(step, Sketch):
            cards.append(_picture(step.image, f"sketch (step {index})", size, step.image is answer))
        elif isinstance(step, Inspect):
            refine = (
                ""
                if step.refine is None
                else f'<p class="refine-text"><i>refine</i> {html_text.escape(step.refine)}</p>'
            )
            cards.append(
                f'<div class="card inspect"><b>Inspect</b><p>{html_text.escape(step.text)}</p>{refine}</div>'
            )
        elif isinstance(step, Refine):
            cards += [
                plan_card(step.plan, "Refine"),
                _picture(step.image, f"refined (step {index})", size, step.image is answer),
            ]
    return cards


def _score_card(row: dict[str, Any]) -> str:
    """GenEval's verdict (correct, reason) or WISE's scores (WiScore and the three judge scores)."""
    if "correct" in row:
        verdict = "correct" if row["correct"] else "wrong"
        lines = [line for line in str(row.get("reason") or "").splitlines() if line]
        return _text_card(f"score {verdict}", f"Score: {verdict}", *lines)
    if row.get("wiscore") is not None:
        detail = (
            f"consistency {row['consistency']}, realism {row['realism']}, "
            f"aesthetic {row['aesthetic_quality']}"
        )
        return _text_card("score", f"WiScore {row['wiscore']:.3f}", detail)
    return _text_card("score wrong", "Not judged", str(row.get("error")))


_COST_LABELS = {
    "images": "images",
    "sampling_steps": "sampling steps",
    "forward_passes": "forward passes",
    "text_tokens": "text tokens",
    "wall_time_s": "wall time (s)",
    "mode": "mode",
    "seed": "seed",
}
"""The fields of a sample's costs.json shown on its card, in order, with their labels."""


def _costs_card(costs: dict[str, Any]) -> str:
    lines = [
        f"{label}: {costs[name]:.2f}" if isinstance(costs[name], float) else f"{label}: {costs[name]}"
        for name, label in _COST_LABELS.items()
        if name in costs
    ]
    if costs.get("drafted_tokens"):  # prompt-lookup drafts (GenerationConfig.draft_tokens)
        lines.insert(4, f"drafted tokens kept: {costs['drafted_tokens_kept']} of {costs['drafted_tokens']}")
    return _text_card("costs", "Costs", *lines)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pdgen trajectories ({count})</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; }}
section {{ margin-bottom: 2em; }}
h2 {{ font-size: 1em; color: #555; }}
.steps {{ display: flex; flex-wrap: wrap; gap: .6em; align-items: flex-start; }}
.card {{ max-width: 16em; padding: .5em .7em; border-radius: 6px;
         background: #fff; border: 1px solid #ddd; }}
.card p {{ margin: .3em 0; font-size: .9em; }}
.prompt {{ background: #eef3ff; }} .plan {{ background: #f3fff0; }} .refine {{ background: #fff4e6; }}
.inspect {{ background: #fff9d6; }} p.refine-text {{ color: #b45309; }}
.costs {{ background: #f4f4f5; }} .score {{ background: #ecfdf5; }} .score.wrong {{ background: #fef2f2; }}
figure {{ margin: 0; text-align: center; font-size: .8em; color: #666; }}
figure img {{ image-rendering: pixelated; border: 1px solid #ccc; display: block; }}
figure.answer img {{ outline: 3px solid #16a34a; }}
</style></head>
<body><h1>pdgen trajectories ({count})</h1>
{header}
{sections}
</body></html>
"""
