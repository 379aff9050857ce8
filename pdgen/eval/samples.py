"""GenEval's on-disk layout, read and written.

    <root>/00000/metadata.jsonl     one JSON object: line 0 of the prompt file (json.dump, no newline)
    <root>/00000/samples/0000.png   the images for that prompt (any `\\d+\\.png` name is read)

Folders are any all-digit names (GenEval zero-pads to 5); other files in `samples/` are ignored, so
trajectories may sit beside the images. Writes are atomic (temporary file + `os.replace`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pdgen.errors import UserError
from pdgen.io import write_atomic

SAMPLE_NAME = re.compile(r"\d+\.png")


@dataclass(frozen=True)
class PromptFolder:
    """One prompt's folder: its metadata and its image files, sorted by name."""

    path: Path
    metadata: dict[str, Any]
    images: tuple[Path, ...]


def write_prompt_folder(
    root: str | Path, index: int, metadata: dict[str, Any], images: Sequence[Image.Image]
) -> Path:
    """Write one prompt's folder (`{index:05d}/metadata.jsonl`, `samples/{k:04d}.png`); returns it."""
    folder = Path(root) / f"{index:05d}"
    write_atomic(folder / "metadata.jsonl", lambda f: f.write(json.dumps(metadata).encode()))
    for k, image in enumerate(images):
        write_atomic(folder / "samples" / f"{k:04d}.png", lambda f, im=image: im.save(f, format="PNG"))
    return folder


def read_prompt_folders(root: str | Path, require_tag: bool = True) -> list[PromptFolder]:
    """Every prompt folder under `root`, in index order.

    Args:
        root: the folder of prompt folders.
        require_tag: refuse metadata without GenEval's `tag` (what scoring needs); pdgen's predictions
            for plain prompts carry only `{"prompt": ...}`, which the viewer reads with False.

    Raises:
        UserError: if `root` is not a folder, or a prompt folder's metadata.jsonl is missing or is not
            one JSON object (with a `tag` when `require_tag`).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"GenEval image folder {root} does not exist")
    folders = []
    for sub in sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        meta_path = sub / "metadata.jsonl"
        try:
            metadata = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"{meta_path}: expected one JSON object ({error})") from error
        if not isinstance(metadata, dict):
            raise UserError(f"{meta_path}: expected one JSON object, found {type(metadata).__name__}")
        if require_tag and "tag" not in metadata:
            raise UserError(f"{meta_path}: expected a GenEval metadata object with a 'tag'")
        samples = sub / "samples"
        names = (
            sorted(p for p in samples.iterdir() if SAMPLE_NAME.fullmatch(p.name)) if samples.is_dir() else []
        )
        folders.append(PromptFolder(sub, metadata, tuple(names)))
    return folders


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as JSON lines, atomically."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    write_atomic(Path(path), lambda f: f.write(text.encode()))
