"""ShapesEdit: an exact edit benchmark in the shapes world, scored with the world's detector.

A *case* is an input scene, an edit request and what the request asks, as data (``pdgen.data.edit``:
``WorldEdit.case()``); ``edit_cases`` draws the benchmark's cases from the test split of requests (no
request the edit subset trains on), ``per_type`` of each edit type. ``write_cases`` writes them where
``pdgen predict`` reads them: ``cases.jsonl`` (one case per line, its ``image`` the input's path) and
``inputs/NNNNN.png``. The prediction folder then holds each case as its metadata, and ``score_edits`` reads
the final images back.

Two questions per image, answered from the detections (class, colour, cell of the box's centre):

- **requested**: did every requested change happen? A recolour or replace: the target's cell holds the new
  object. An add: the new object is there, in a cell no untouched object holds, standing in the asked
  relation to its reference (GenEval's position rule). A remove: the object is gone from its cell. A move:
  the object is in another cell, in the asked relation, and not in its old one.
- **preserved**: did nothing else change? Every object the request does not touch is in its cell with its
  class and colour, and nothing appeared beyond what the request makes. An attempt at a requested change
  that went wrong (a wrong colour in the target's cell, an added object on the wrong side) is a failure of
  *requested* only: each unmet change excuses one object that is not accounted for.

An image is **correct** when both hold. Scores are per edit type, with their count and Wilson 95 %
interval; ``overall`` is the mean of the type scores (as GenEval's overall is the mean of its tags), its
interval the mean of theirs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pdgen.data.edit import EDIT_TYPES, EditOp, ObjectRef, WorldEdit, draw_edit
from pdgen.errors import UserError
from pdgen.eval.geneval import DEFAULT_OPTIONS, Detection, relative_position
from pdgen.eval.process import Rate
from pdgen.eval.samples import read_prompt_folders, write_jsonl
from pdgen.images import open_image
from pdgen.io import write_atomic
from pdgen.world.config import DEFAULT_WORLD, WorldConfig
from pdgen.world.detect import WorldDetector
from pdgen.world.places import cell_name

CASES = "cases.jsonl"
INPUTS = "inputs"
_BENCHMARK_SEED = 1 << 41
"""ShapesEdit's draws are seeded from here: never a seed of the edit subset's samples."""


def edit_cases(
    per_type: int = 20,
    config: WorldConfig = DEFAULT_WORLD,
    seed: int = 0,
    misread: Counter[str] | None = None,
) -> list[WorldEdit]:
    """ShapesEdit's cases: ``per_type`` test-split edits of each type, type by type, a function of ``seed``.

    A case is kept only when the referee reads the world's own renders of it exactly: every object of the
    input scene found as it is, and the expected scene judged correct. The world detector misreads a few
    renders (two objects of one column whose smoothed rims touch are one blob to it; a small circle at an
    unlucky sub-pixel offset reads as a square); a case it would score wrong even when drawn perfectly
    measures the referee, not the model, so it is drawn again, and counted in ``misread`` by type.
    """
    scorer = EditScorer(config)
    cases = []
    for number, kind in enumerate(EDIT_TYPES):
        rng = np.random.default_rng([_BENCHMARK_SEED, seed, number])
        kept = 0
        while kept < per_type:
            case = draw_edit(rng, config, kind, split="test")
            if scorer.reads_exactly(case):
                cases.append(case)
                kept += 1
            elif misread is not None:
                misread[kind] += 1
    return cases


def write_cases(out: str | Path, cases: Sequence[WorldEdit]) -> Path:
    """Write ``out/cases.jsonl`` and ``out/inputs/NNNNN.png`` for ``pdgen predict``; returns the file."""
    out = Path(out)
    rows = []
    for index, case in enumerate(cases):
        name = f"{INPUTS}/{index:05d}.png"
        write_atomic(out / name, lambda f, image=case.source_image: image.save(f, format="PNG"))
        rows.append({**case.case(), "image": name})
    write_jsonl(out / CASES, rows)
    return out / CASES


@dataclass(frozen=True)
class _Seen:
    """One detection, where it is: class, colour, grid cell and pixel box."""

    name: str
    color: str | None
    cell: tuple[int, int]
    box: tuple[float, float, float, float]

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.name, self.color)


@dataclass(frozen=True)
class EditVerdict:
    """``requested``: every requested change happened; ``preserved``: nothing else changed; ``reasons``: the
    problems found, one sentence each."""

    requested: bool
    preserved: bool
    reasons: tuple[str, ...]

    @property
    def correct(self) -> bool:
        return self.requested and self.preserved


def judge_edit(
    case: dict[str, Any], detections: Sequence[Detection], size: tuple[int, int], grid: int
) -> EditVerdict:
    """The verdict on an edited image's detections for one case (``WorldEdit.case()``; module docstring).

    Args:
        case: the case: ``source`` objects and ``edits`` (``EditOp.to_dict``).
        detections: the image's detections (those scoring above GenEval's 0.3 count).
        size: the image's (width, height), to put boxes in cells.
        grid: the world's cells per side.
    """
    seen = [_located(d, size, grid) for d in detections if d.score > DEFAULT_OPTIONS.threshold]
    ops = [EditOp.from_dict(op) for op in case["edits"]]
    touched = {op.target.cell for op in ops if op.target is not None}
    untouched = [o for o in map(ObjectRef.from_dict, case["source"]) if o.cell not in touched]
    claimed: set[int] = set()
    requested, preserved = [], []

    def claim(wanted: Any) -> _Seen | None:
        for i, thing in enumerate(seen):
            if i not in claimed and wanted(thing):
                claimed.add(i)
                return thing
        return None

    for kept in untouched:
        if claim(lambda s, o=kept: s.key == o.key and s.cell == o.cell) is None:
            preserved.append(f"the {_noun(kept.key)} at {cell_name(kept.cell, grid)} is not as it was")
    unmet = 0
    held = {o.cell for o in untouched}
    for op in ops:
        problem = _check(op, seen, claim, held, grid)
        if problem is not None:
            requested.append(problem)
            unmet += op.op != "remove"  # a change that made something wrong excuses that thing
    stray = [s for i, s in enumerate(seen) if i not in claimed]
    if len(stray) > unmet:
        extra = ", ".join(f"a {_noun(s.key)} at {cell_name(s.cell, grid)}" for s in stray)
        preserved.append(f"the image holds what the request does not ask for: {extra}")
    return EditVerdict(not requested, not preserved, tuple(requested + preserved))


def _check(
    op: EditOp, seen: Sequence[_Seen], claim: Any, held: set[tuple[int, int]], grid: int
) -> str | None:
    """What is wrong with one requested change (None: it happened); claims what it accounts for."""
    target = op.target
    if op.op in ("recolor", "replace"):
        assert target is not None and op.result is not None
        if claim(lambda s: s.key == op.result and s.cell == target.cell) is None:
            return (
                f"no {_noun(op.result)} at {cell_name(target.cell, grid)}, where the {_noun(target.key)} was"
            )
        return None
    if op.op == "remove":
        assert target is not None
        if claim(lambda s: s.key == target.key and s.cell == target.cell) is not None:
            return f"the {_noun(target.key)} is still at {cell_name(target.cell, grid)}"
        return None
    assert op.result is not None and op.relation is not None
    predicate, reference = op.relation
    anchors = [s for s in seen if s.key == reference]

    def placed(s: _Seen) -> bool:
        fresh = s.cell not in held and (target is None or s.cell != target.cell)
        return (
            s.key == op.result
            and fresh
            and any(predicate in relative_position(s.box, a.box) for a in anchors)
        )

    problem = None
    if claim(placed) is None:
        problem = f"no {_noun(op.result)} {predicate} the {_noun(reference)}" + (
            "" if anchors else " (not found)"
        )
    if op.op == "move":
        assert target is not None
        if claim(lambda s: s.key == target.key and s.cell == target.cell) is not None:
            problem = f"the {_noun(target.key)} is still at {cell_name(target.cell, grid)}"
    return problem


def _located(detection: Detection, size: tuple[int, int], grid: int) -> _Seen:
    x1, y1, x2, y2 = detection.box
    column = min(grid - 1, max(0, int((x1 + x2) / 2 / size[0] * grid)))
    row = min(grid - 1, max(0, int((y1 + y2) / 2 / size[1] * grid)))
    return _Seen(detection.name, detection.color, (row, column), (x1, y1, x2, y2))


def _noun(key: Sequence[str | None]) -> str:
    return " ".join(str(part) for part in (key[1], key[0]) if part)


class EditScorer:
    """Scores edited images against their cases with the world's detector.

    Args:
        config: the world the images are of.
    """

    def __init__(self, config: WorldConfig = DEFAULT_WORLD) -> None:
        self.config = config
        self.detector = WorldDetector(config)

    def __call__(self, case: dict[str, Any], image: Image.Image) -> EditVerdict:
        return judge_edit(case, self.detector.detect(image), image.size, self.config.grid)

    def reads_exactly(self, edit: WorldEdit) -> bool:
        """Whether the world's renders of ``edit`` score as they must: its input scene unchanged (no edit
        asked, nothing changed) and its expected scene correct."""
        case = edit.case()
        unchanged = self({**case, "edits": []}, edit.source_image).preserved
        return unchanged and self(case, edit.steps[-1].image).correct


@dataclass
class EditReport:
    """ShapesEdit's scores: per edit type, ``requested``, ``preserved`` and ``correct`` rates (with ``n`` and
    the Wilson 95 % interval), and the rows (one per image: file, type, verdicts, reasons)."""

    requested: dict[str, Rate]
    preserved: dict[str, Rate]
    correct: dict[str, Rate]
    rows: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        """Per type (and ``overall``, the mean over the types scored): each rate as ``Rate.to_dict``."""
        out: dict[str, Any] = {}
        for name, rates in (
            ("correct", self.correct),
            ("requested", self.requested),
            ("preserved", self.preserved),
        ):
            table = {kind: rates[kind].to_dict() for kind in EDIT_TYPES if rates[kind].n}
            scored = list(table.values())
            if scored:
                mean = sum(r["rate"] for r in scored) / len(scored)
                low = sum(r["interval_95"][0] for r in scored) / len(scored)
                high = sum(r["interval_95"][1] for r in scored) / len(scored)
                table["overall"] = {
                    "rate": mean,
                    "n": sum(r["n"] for r in scored),
                    "interval_95": [low, high],
                }
            out[name] = table
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": "shapes_edit", "summary": self.summary(), "rows": self.rows}


def score_edits(images: str | Path, config: WorldConfig = DEFAULT_WORLD) -> EditReport:
    """Score every final image of a prediction folder whose metadata are ShapesEdit cases.

    Raises:
        UserError: a prompt folder whose metadata is not a ShapesEdit case (no ``edits``), or an image
            that cannot be read (naming it).
    """
    scorer = EditScorer(config)
    rates: dict[str, dict[str, Rate]] = {n: {k: Rate() for k in EDIT_TYPES} for n in ("r", "p", "c")}
    rows = []
    for folder in read_prompt_folders(images):
        case = folder.metadata
        if "edits" not in case or case.get("tag") not in EDIT_TYPES:
            raise UserError(
                f"{folder.path / 'metadata.jsonl'} is not a ShapesEdit case (no 'edits', or another 'tag'); "
                "write the cases with `pdgen eval edit-cases` and predict from their cases.jsonl"
            )
        for path in folder.images:
            verdict = scorer(case, open_image(path).convert("RGB"))
            kind = case["tag"]
            rates["r"][kind].add(verdict.requested)
            rates["p"][kind].add(verdict.preserved)
            rates["c"][kind].add(verdict.correct)
            rows.append({
                "filename": str(path),
                "tag": kind,
                "prompt": case["prompt"],
                "correct": verdict.correct,
                "requested": verdict.requested,
                "preserved": verdict.preserved,
                "reason": "\n".join(verdict.reasons),
            })  # fmt: skip
    return EditReport(rates["r"], rates["p"], rates["c"], rows)


def write_ground_truth(root: str | Path, cases: Sequence[WorldEdit]) -> None:
    """A prediction folder of exact edits: each case's metadata, the world's render of the expected scene
    as its sample, and the edit's trajectory (input image first) beside it. It scores 1.0 on every type."""
    from pdgen.eval.predictions import TRAJECTORY_DIR
    from pdgen.eval.samples import write_prompt_folder

    for index, case in enumerate(cases):
        folder = write_prompt_folder(root, index, case.case(), [case.steps[-1].image])
        case.trajectory().save(folder / TRAJECTORY_DIR / "0000")
