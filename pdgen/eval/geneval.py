"""GenEval's scoring rules, decision for decision, over any `Detector`.

The official scorer (djghosh13/geneval, `evaluation/evaluate_images.py` + `summary_scores.py`) runs
Mask2Former and a CLIP colour classifier and then applies plain rules. This module is those rules; the
detector is a protocol, so the same engine scores real images (a Mask2Former back end) and the shapes
world (`pdgen.world.detect.WorldDetector`). What the rules are:

1. Per class, detections with score strictly above the threshold (0.3; 0.9 for the `counting` tag), in
   descending score order, at most 16; greedy NMS only if `max_overlap` < 1 (the default 1.0 turns it
   off), with GenEval's +1-pixel IoU.
2. `include` clauses, in order: the top-`count` detections of the class must exist
   ("expected {cls}>={n}, found {m}"); with a `color`, at least `count` of them must be classified as
   that colour ("expected {c} {cls}>={n}, found {k} {c}; and " + the tally of every predicted colour,
   the expected one included, e.g. "1 red, 1 blue"); with a `position`
   [rel, g], clause g must have matched ("no target for {cls} to be {rel}") and every (subject, target)
   pair must stand in `rel` ("expected {cls} {rel} target, found {rels} target"). Each clause records its
   detections as a group (None when it failed).
3. `exclude` clauses fail when the class has at least `count` detections
   ("expected {cls}<{n}, found {m}").
4. An image is correct when every clause passes; a tag's score is the mean over its images and the
   overall score is the plain mean of the tag scores.

Every decision is taken in the detector's precision, float32, whatever type the scores and boxes arrive
as: the official detector hands over float32 arrays and the scorer compares in float32, so a score of
exactly float32(0.3) fails the 0.3 threshold (in float64 it is 0.30000001 and would pass), and a box pair on
the +-0.5 boundary of a relation falls the way float32 rounds it. Scores are thresholded before they are
sorted: a NaN score fails the threshold, and sorting it first would scramble the order of the others.

One deliberate difference: where the official scorer joins a *set* of relations (an order that changes
between Python runs), this engine lists them in the fixed order left of, right of, above, below.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps

from pdgen.errors import UserError
from pdgen.eval.samples import read_prompt_folders
from pdgen.images import open_image
from pdgen.scene.vocabulary import COLORS, RELATIONS, TAGS

Box = tuple[float, float, float, float]

PRECISION = np.float32
"""The dtype of the official detector's boxes and scores, in which every rule decides."""


@dataclass(frozen=True)
class Detection:
    """One detected instance: class, pixel box (x1, y1, x2, y2), confidence, optional mask and colour."""

    name: str
    box: Box
    score: float
    mask: np.ndarray | None = None  # (H, W) bool
    color: str | None = None


class Detector(Protocol):
    """An instance detector plus GenEval's colour classifier."""

    def detect(self, image: Image.Image) -> list[Detection]:
        """All detections in the image, any score (the engine thresholds them)."""
        ...

    def classify_colors(self, image: Image.Image, detections: Sequence[Detection], name: str) -> list[str]:
        """One of GenEval's ten colour names per detection of class `name`."""
        ...


@dataclass(frozen=True)
class ScoringOptions:
    """The official scorer's `--options`, with its defaults.

    Args:
        threshold: minimum detection score (strictly greater) for every tag but `counting`.
        counting_threshold: the same for the `counting` tag.
        max_objects: detections kept per class, highest scores first.
        max_overlap: NMS IoU limit; 1.0 disables NMS.
        position_threshold: fraction of the two boxes' sizes subtracted from their centre offset.
    """

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    position_threshold: float = 0.1


DEFAULT_OPTIONS = ScoringOptions()


@dataclass(frozen=True)
class ImageResult:
    """The verdict for one image, with the official reason text and the kept detections per class."""

    correct: bool
    reason: str
    detected: dict[str, list[Detection]]

    def details(self) -> dict[str, list[list[float]]]:
        """GenEval's `details` field: class -> [[x1, y1, x2, y2, score], ...]."""
        return {
            name: [[*map(float, d.box), float(d.score)] for d in ds] for name, ds in self.detected.items()
        }


def compute_iou(a: Box, b: Box) -> float:
    """IoU with GenEval's +1-pixel area convention (used only by the optional NMS), in `PRECISION`."""
    a32, b32 = np.asarray(a, PRECISION), np.asarray(b, PRECISION)

    def area(box: np.ndarray) -> np.floating:
        return np.maximum(box[2] - box[0] + 1, 0) * np.maximum(box[3] - box[1] + 1, 0)

    inter = area(np.concatenate([np.maximum(a32[:2], b32[:2]), np.minimum(a32[2:], b32[2:])]))
    union = area(a32) + area(b32) - inter
    return float(inter / union) if union else 0.0


def relative_position(a: Box, b: Box, threshold: float = 0.1) -> tuple[str, ...]:
    """The relations in which box `a` stands to box `b`, in `RELATIONS` order; may be two or none.

    Worked example: a = (0, 0, 10, 10), b = (20, 2, 30, 12): offset (-20, -2), sizes sum (20, 20), so the
    revised offset is (-(20 - 2), -max(2 - 2, 0)) = (-18, 0); divided by |offset| = 20.1 that is
    (-0.90, 0): 'left of' only. Computed in `PRECISION` (float32), as the official scorer does with its
    detector's boxes: near +-0.5 the two precisions can disagree.
    """
    a32, b32 = np.asarray(a, PRECISION), np.asarray(b, PRECISION)  # (x1, y1, x2, y2)
    ca, cb = (a32[:2] + a32[2:]) / 2, (b32[:2] + b32[2:]) / 2  # centres (x, y)
    dims = np.abs(a32[2:] - a32[:2]) + np.abs(b32[2:] - b32[:2])  # summed (width, height)
    offset = ca - cb
    revised = np.maximum(np.abs(offset) - PRECISION(threshold) * dims, 0) * np.sign(offset)
    if np.all(np.abs(revised) < PRECISION(1e-3)):
        return ()
    dx, dy = revised / np.linalg.norm(offset)
    found = {"left of": dx < -0.5, "right of": dx > 0.5, "above": dy < -0.5, "below": dy > 0.5}
    return tuple(r for r in RELATIONS if found[r])


def select_detections(
    detections: Iterable[Detection], tag: str, options: ScoringOptions = DEFAULT_OPTIONS
) -> dict[str, list[Detection]]:
    """Rule 1: threshold, order by score, keep at most `max_objects`, optional NMS; empty classes omitted.

    Scores are compared in `PRECISION`; the threshold comes first, so a NaN score (which fails it) never
    enters the sort, where it would compare false with everything and scramble the others' order.
    """
    threshold = PRECISION(options.counting_threshold if tag == "counting" else options.threshold)
    by_class: dict[str, list[Detection]] = {}
    for d in detections:
        by_class.setdefault(d.name, []).append(d)
    kept: dict[str, list[Detection]] = {}
    for name, ds in by_class.items():
        scores = [PRECISION(d.score) for d in ds]
        passing = [i for i in range(len(ds)) if scores[i] > threshold]
        # Descending score; ties go to the later detection, as numpy's reversed ascending argsort does.
        order = sorted(passing, key=lambda i: (scores[i], i), reverse=True)
        ordered = [ds[i] for i in order][: options.max_objects]
        chosen: list[Detection] = []
        while ordered:
            best = ordered.pop(0)
            chosen.append(best)
            if options.max_overlap < 1:
                overlap = PRECISION(options.max_overlap)
                ordered = [d for d in ordered if PRECISION(compute_iou(best.box, d.box)) < overlap]
        if chosen:
            kept[name] = chosen
    return kept


def evaluate(
    detected: dict[str, list[Detection]],
    metadata: dict[str, Any],
    classify_colors: Callable[[Sequence[Detection], str], list[str]],
    options: ScoringOptions = DEFAULT_OPTIONS,
) -> tuple[bool, str]:
    """Rules 2-3 on already selected detections: (correct, reason) exactly as the official scorer.

    Args:
        detected: `select_detections`' output.
        metadata: one row of `evaluation_metadata.jsonl`.
        classify_colors: colours of the given detections of a class (GenEval: CLIP on masked crops).
        options: the thresholds.
    """
    correct = True
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = detected.get(name, [])[:count]
        matched = True
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in clause:
                colors = classify_colors(found, name)
                want = clause["color"]
                if colors.count(want) < count:
                    correct = matched = False
                    tally = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    reasons.append(
                        f"expected {want} {name}>={count}, found {colors.count(want)} {want}; and {tally}"
                    )
            if "position" in clause and matched:
                relation, target = clause["position"]
                if groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for subject in found:
                        for other in groups[target]:
                            rels = relative_position(subject.box, other.box, options.position_threshold)
                            if relation not in rels:
                                correct = matched = False
                                reasons.append(
                                    f"expected {name} {relation} target, found {' and '.join(rels)} target"
                                )
                                break
                        if not matched:
                            break
        groups.append(found if matched else None)
    for clause in metadata.get("exclude", []):
        name = clause["class"]
        if len(detected.get(name, [])) >= clause["count"]:
            correct = False
            reasons.append(f"expected {name}<{clause['count']}, found {len(detected[name])}")
    return correct, "\n".join(reasons)


def score_image(
    image: Image.Image,
    metadata: dict[str, Any],
    detector: Detector,
    options: ScoringOptions = DEFAULT_OPTIONS,
) -> ImageResult:
    """Detect, select and evaluate one image."""
    detected = select_detections(detector.detect(image), metadata["tag"], options)
    correct, reason = evaluate(
        detected, metadata, lambda ds, name: detector.classify_colors(image, ds, name), options
    )
    return ImageResult(correct, reason, detected)


def result_row(filename: str, metadata: dict[str, Any], result: ImageResult) -> dict[str, Any]:
    """One line of the official `results.jsonl`."""
    return {
        "filename": filename,
        "tag": metadata["tag"],
        "prompt": metadata["prompt"],
        "correct": result.correct,
        "reason": result.reason,
        "metadata": json.dumps(metadata),
        "details": json.dumps(result.details()),
    }


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Per-tag accuracy (mean over images), `overall` = mean of the tag accuracies (GenEval's score),
    and `image_mean` (mean over all images, not GenEval's score). Tags without images are left out."""
    per_tag: dict[str, list[bool]] = {}
    for row in rows:
        per_tag.setdefault(row["tag"], []).append(bool(row["correct"]))
    if not per_tag:
        raise UserError("no results to summarize")
    summary = {tag: float(np.mean(per_tag[tag])) for tag in sorted(per_tag, key=_tag_order)}
    summary["overall"] = float(np.mean([summary[tag] for tag in per_tag]))
    summary["image_mean"] = float(np.mean([c for cs in per_tag.values() for c in cs]))
    return summary


def _tag_order(tag: str) -> tuple[int, str]:
    return (TAGS.index(tag) if tag in TAGS else len(TAGS), tag)


def score_folder(
    root: str | Path, detector: Detector, options: ScoringOptions = DEFAULT_OPTIONS
) -> list[dict[str, Any]]:
    """Score every image of a GenEval-layout folder (see `pdgen.eval.samples`): one result row each."""
    rows = []
    for folder in read_prompt_folders(root):
        for path in folder.images:
            image = ImageOps.exif_transpose(open_image(path)).convert("RGB")  # UnreadableImage names the file
            rows.append(
                result_row(str(path), folder.metadata, score_image(image, folder.metadata, detector, options))
            )
    return rows
