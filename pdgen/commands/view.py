"""Look at trajectories: render them as HTML pages with their intermediate images.

`pdgen view <name>`: every public function below is one subcommand (see `pdgen.commands`): its docstring
is the help, its typed parameters the options. `pdgen --help` does not import this module, and running a
view command needs only PIL.
"""

from __future__ import annotations

import base64
import html as html_text
import io
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from pdgen.trajectory import JSON_NAME, Inspect, Plan, Refine, Sketch, Trajectory


def html(path: Path, out: Path = Path("trajectories.html"), limit: int = 50, size: int = 128) -> str:
    """Write one HTML page that shows trajectories step by step, with their images inline.

    Each trajectory is a row of cards: the prompt (and input image), then every Plan, Sketch, Inspect and
    Refine in order; the last image, the answer, is outlined.

    Args:
        path: a trajectory directory (as `Trajectory.save` writes it), a webdataset `.tar` shard of
            trajectory samples (`KEY.trajectory.json`, `KEY.00.png`, …), or a folder searched for both.
        out: the HTML file to write.
        limit: show at most this many trajectories.
        size: the longer side of every image on the page, in screen pixels; small images are enlarged
            with sharp pixels.

    Returns:
        The path of the page written.
    """
    sections = []
    for title, trajectory in _trajectories(path):
        if len(sections) == limit:
            break
        sections.append(_section(title, trajectory, size))
    if not sections:
        raise ValueError(f"no trajectories in {path} (looked for trajectory.json and .tar shards)")
    page = _PAGE.format(count=len(sections), sections="\n".join(sections))
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(page)
    os.replace(temporary, out)
    return str(out)


def _trajectories(path: Path) -> Iterator[tuple[str, Trajectory]]:
    """Every trajectory under `path` with a title, in file-name order."""
    if path.suffix == ".tar":
        for key, files in _tar_samples(path):
            yield f"{path} / {key}", Trajectory.from_files(files)
    elif (path / JSON_NAME).is_file():
        yield str(path), Trajectory.load(path)
    elif path.is_dir():
        found = sorted({file.parent for file in path.rglob(JSON_NAME)} | set(path.rglob("*.tar")))
        for item in found:
            yield from _trajectories(item)
    else:
        raise ValueError(f"{path} is neither a trajectory directory, a .tar shard nor a folder")


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


def _section(title: str, trajectory: Trajectory, size: int) -> str:
    answer = trajectory.answer

    def picture(image: Image.Image, label: str) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        source = base64.b64encode(buffer.getvalue()).decode("ascii")
        width = round(size * image.width / max(image.size))
        outline = " answer" if image is answer else ""
        return (
            f'<figure class="image{outline}"><img src="data:image/png;base64,{source}" width="{width}">'
            f"<figcaption>{label}</figcaption></figure>"
        )

    def plan_card(plan: Plan, kind: str) -> str:
        return (
            f'<div class="card {kind.lower()}"><b>{kind}</b><p><i>ins</i> {html_text.escape(plan.ins)}</p>'
            f"<p><i>des</i> {html_text.escape(plan.des)}</p></div>"
        )

    cards = [f'<div class="card prompt"><b>Prompt</b><p>{html_text.escape(trajectory.prompt)}</p></div>']
    if trajectory.input_image is not None:
        cards.append(picture(trajectory.input_image, "input"))
    for index, step in enumerate(trajectory.steps):
        if isinstance(step, Plan):
            cards.append(plan_card(step, "Plan"))
        elif isinstance(step, Sketch):
            cards.append(picture(step.image, f"sketch (step {index})"))
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
            cards += [plan_card(step.plan, "Refine"), picture(step.image, f"refined (step {index})")]
    return f'<section><h2>{html_text.escape(title)}</h2><div class="steps">{"".join(cards)}</div></section>'


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
figure {{ margin: 0; text-align: center; font-size: .8em; color: #666; }}
figure img {{ image-rendering: pixelated; border: 1px solid #ccc; display: block; }}
figure.answer img {{ outline: 3px solid #16a34a; }}
</style></head>
<body><h1>pdgen trajectories ({count})</h1>
{sections}
</body></html>
"""
