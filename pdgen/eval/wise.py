"""WISE (world knowledge in text-to-image): its prompt files, the legacy judge rubric, WiScore.

WISE has no licence, so pdgen ships none of its prompts: the user passes the files. What is in this
file, top to bottom:

- `WiseSchema`, `LEGACY` and `VERIFIED`: the two releases' category ID ranges, `Category` labels and
  category weights. Categories are decided by `prompt_id` range, as the official calculators do; the
  label must agree with the range.
- `load_prompts(paths, schema)`: read and validate the JSON arrays (`Prompt`, `Explanation`,
  `Category`, `Subcategory`, `prompt_id`; other keys are ignored), auto-detecting the release;
  `generation_records` turns them into what the generator may see (no `Explanation`).
- `parse_judgement(text)`: the three 0-2 scores out of a judge's reply.
- `WiseJudge`: one image + its prompt -> `Judgement`, through an OpenAI-compatible `ChatClient` with a
  pinned judge id, temperature 0; replies it cannot parse are retried like timeouts and HTTP errors,
  and every failed try is recorded.
- `judge_images` and `summarize`: score a folder of images and aggregate.

The scores (legacy protocol, the one the seed paper and BAGEL report):

    WiScore(image) = (0.7 * consistency + 0.2 * realism + 0.1 * aesthetic) / 2        each score 0, 1 or 2
    category score  = mean WiScore over the category's images
    weighted        = sum_c weight_c * score_c / sum_c weight_c (WISE's own overall; the weights are
                      0.4 / 0.167 / 0.133 / 0.1 / 0.1 / 0.1 for culture / time / space / biology /
                      physics / chemistry, roughly the category sizes)
    unweighted      = plain mean of the category scores (what BAGEL's scorer computed, and so the
                      BAGEL-lineage numbers such as the seed paper's 0.70)

Worked example: scores (2, 1, 2) give (1.4 + 0.2 + 0.2) / 2 = 0.9. With culture 0.5 and time 0.8 only,
weighted = (0.4 * 0.5 + 0.167 * 0.8) / 0.567 = 0.588 and unweighted = 0.65. The sum over present
categories is renormalised so that a subset still gives a number in [0, 1]; `complete` says whether all
1,000 prompt IDs were judged (the official calculator refuses an overall otherwise).

A prompt whose judging fails (the endpoint never answered, or every reply was malformed) or whose image
is missing is kept as a row with an `error`, counted in `failed` and listed in `failed_ids`: the
scores cover the judged prompts only, and the report says how many those are.

WISE_Verified prompt files load too (their own ID ranges and weights 0.40 / 0.12 x 5), but they are
judged here with the legacy rubric: the numbers are not comparable with the Verified leaderboard, whose
judge gives a binary score.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pdgen.errors import UserError
from pdgen.eval.samples import read_prompt_folders
from pdgen.images import UnreadableImage, open_image
from pdgen.judges.openai import ChatClient, ChatError, InvalidReply, image_part, text_part

CATEGORIES = ("culture", "time", "space", "biology", "physics", "chemistry")
DEFAULT_JUDGE = "gpt-4o-2024-05-13"
"""The legacy protocol's judge snapshot. WISE's maintainers trace score gaps to judge versions, so the
id is pinned (a dated snapshot, not an alias such as `gpt-4o`) and recorded in every row."""
REQUIRED_KEYS = {"Prompt": str, "Explanation": str, "Category": str, "Subcategory": str, "prompt_id": int}


@dataclass(frozen=True)
class WiseSchema:
    """One WISE release: per category (in `CATEGORIES` order) its inclusive `prompt_id` range, its
    `Category` label in the files, and its weight in the weighted overall."""

    name: str
    ranges: tuple[tuple[int, int], ...]
    labels: tuple[str, ...]
    weights: tuple[float, ...]

    def category_of(self, prompt_id: int) -> str | None:
        """The category whose ID range holds `prompt_id`, or None outside 1..1000."""
        for category, (low, high) in zip(CATEGORIES, self.ranges, strict=True):
            if low <= prompt_id <= high:
                return category
        return None

    def label_of(self, category: str) -> str:
        return self.labels[CATEGORIES.index(category)]

    def weight_of(self, category: str) -> float:
        return self.weights[CATEGORIES.index(category)]


LEGACY = WiseSchema(
    "legacy",
    ranges=((1, 400), (401, 567), (568, 700), (701, 800), (801, 900), (901, 1000)),
    labels=("Cultural knowledge", "time", "Space", "Biology", "Physical Knowledge", "Chemistry"),
    weights=(0.4, 0.167, 0.133, 0.1, 0.1, 0.1),
)
VERIFIED = WiseSchema(
    "verified",
    ranges=((1, 400), (401, 520), (521, 640), (641, 760), (761, 880), (881, 1000)),
    labels=("Culture", "Time", "Space", "Biology", "Physics", "Chemistry"),
    weights=(0.4, 0.12, 0.12, 0.12, 0.12, 0.12),
)
SCHEMAS = {schema.name: schema for schema in (LEGACY, VERIFIED)}
FULL_SIZE = 1000
"""Prompt IDs in a complete release (1..1000, both schemas)."""


@dataclass(frozen=True)
class WisePrompt:
    """One prompt: `prompt` is what the generator sees, `explanation` only the judge sees."""

    prompt_id: int
    prompt: str
    explanation: str
    category: str
    subcategory: str


@dataclass(frozen=True)
class WisePromptSet:
    """Validated prompts in `prompt_id` order, the release they follow and a hash of the source files."""

    schema: WiseSchema
    prompts: tuple[WisePrompt, ...]
    sha256: str


def load_prompts(paths: str | Path | Sequence[str | Path], schema: str = "auto") -> WisePromptSet:
    """Read WISE prompt files (JSON arrays of records) and validate them against a release.

    Args:
        paths: one file or several (the legacy release is three files); IDs must be unique across them.
        schema: `legacy`, `verified`, or `auto`: the release under which every record's label agrees
            with its ID range; legacy when both do (a subset with ambiguous labels).

    Raises:
        UserError: naming the file and the record's position (and prompt_id) for a record that is not
            an object, lacks a key, has a value of the wrong type, repeats an ID, or whose `Category`
            disagrees with its ID range; for an unknown `schema`.
    """
    if schema != "auto" and schema not in SCHEMAS:
        raise UserError(f"unknown WISE schema {schema!r}; expected auto, {', '.join(SCHEMAS)}")
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not paths:
        raise UserError("no WISE prompt file given")
    digest = hashlib.sha256()
    records: list[tuple[str, dict[str, Any]]] = []  # (where, record)
    seen: dict[int, str] = {}
    for path in paths:
        try:
            data = path.read_bytes()
            document = json.loads(data)
        except OSError as error:
            raise UserError(f"cannot read WISE prompt file {path} ({error})") from error
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: not valid JSON ({error})") from error
        digest.update(data)
        if not isinstance(document, list):
            raise UserError(
                f"{path}: expected a JSON array of prompt records, found {type(document).__name__}"
            )
        for position, record in enumerate(document):
            where = f"{path}: record {position}"
            _check_record(record, where)
            where += f" (prompt_id {record['prompt_id']})"
            if record["prompt_id"] in seen:
                raise UserError(f"{where}: prompt_id repeats {seen[record['prompt_id']]}")
            seen[record["prompt_id"]] = where
            records.append((where, record))
    chosen = _choose_schema(records, schema)
    prompts = sorted(
        (
            WisePrompt(
                prompt_id=record["prompt_id"],
                prompt=record["Prompt"],
                explanation=record["Explanation"],
                category=chosen.category_of(record["prompt_id"]),
                subcategory=record["Subcategory"],
            )
            for _, record in records
        ),
        key=lambda p: p.prompt_id,
    )
    return WisePromptSet(chosen, tuple(prompts), digest.hexdigest())


def _check_record(record: object, where: str) -> None:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(record).__name__}")
    for key, kind in REQUIRED_KEYS.items():
        if key not in record:
            raise UserError(f"{where}: missing key {key!r} (a WISE record has {', '.join(REQUIRED_KEYS)})")
        value = record[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"{where}: {key} must be a {kind.__name__}, found {value!r}")
    if not record["Prompt"].strip():
        raise UserError(f"{where}: Prompt is empty")


def _schema_problem(where: str, record: dict[str, Any], schema: WiseSchema) -> str | None:
    """Why `record` does not follow `schema`, or None."""
    category = schema.category_of(record["prompt_id"])
    if category is None:
        return f"{where}: prompt_id must be in 1..{FULL_SIZE}"
    if record["Category"] != schema.label_of(category):
        low, high = schema.ranges[CATEGORIES.index(category)]
        return (
            f"{where}: Category {record['Category']!r} does not match the {schema.name} release, where "
            f"IDs {low}-{high} are {schema.label_of(category)!r}"
        )
    return None


def _choose_schema(records: Sequence[tuple[str, dict[str, Any]]], name: str) -> WiseSchema:
    candidates = [SCHEMAS[name]] if name != "auto" else [LEGACY, VERIFIED]
    problems = {}
    for schema in candidates:
        found = [p for where, record in records if (p := _schema_problem(where, record, schema))]
        if not found:
            return schema
        problems[schema.name] = found
    # Name the first misfit of the release the file fits best.
    best = min(problems.values(), key=len)
    raise UserError(
        best[0] + ("" if name != "auto" else " (checked against the legacy and verified releases)")
    )


def generation_records(prompt_set: WisePromptSet) -> list[dict[str, Any]]:
    """What the generator may see, one record per prompt (`pdgen predict` reads them as a .jsonl):
    `prompt`, `prompt_id`, `category`, `subcategory`. The explanation is left out: it is the answer."""
    return [
        {"prompt": p.prompt, "prompt_id": p.prompt_id, "category": p.category, "subcategory": p.subcategory}
        for p in prompt_set.prompts
    ]


# --------------------------------------------------------------------------------------------------------
# The judge

SYSTEM_MESSAGE = (
    "You are a meticulous professional auditor of generated images. You grade strictly against the "
    "rubric you are given and never reward an image for effort."
)

RUBRIC = """Grade the image against the prompt below. The prompt tests world knowledge: the explanation \
tells you what a correct image must show.

PROMPT: {prompt}
EXPLANATION: {explanation}

Give three scores, each 0, 1 or 2:
- Consistency: does the image show what the prompt means, as the explanation describes it?
  2 = fully and exactly; 1 = partly, or with a notable error; 0 = not at all, or the wrong thing.
- Realism: is the content physically and visually plausible (anatomy, lighting, materials, perspective)?
  2 = convincing; 1 = noticeable flaws; 0 = clearly broken.
- Aesthetic Quality: composition, colour and craft.
  2 = accomplished; 1 = ordinary; 0 = poor.

Be severe: when you hesitate between two scores, give the lower one.

Answer with exactly these three lines and nothing else:
Consistency: <0|1|2>
Realism: <0|1|2>
Aesthetic Quality: <0|1|2>"""

_LABELS = {"consistency": "consistency", "realism": "realism", "aesthetic quality": "aesthetic_quality"}
# A label, optional markdown bold around it or its colon, an ASCII or full-width colon, then the score.
_LABELLED = re.compile(
    r"(consistency|realism|aesthetic\s+quality)\s*\**\s*[:\uff1a]\s*\**\s*([0-2])(?![\d.])", re.IGNORECASE
)
_BARE = re.compile(r"\s*\**\s*([0-2])\s*\**\s*")


class MalformedJudgement(ValueError):
    """A judge reply that does not hold the three scores."""


def parse_judgement(text: str) -> dict[str, int]:
    """`{"consistency", "realism", "aesthetic_quality"}` scores from a reply.

    Reads `Label: n` lines (any case, `**` bold, ASCII or full-width colon; the first of each label
    counts), or else exactly three bare lines of 0-2 in the rubric's order.

    >>> parse_judgement("**Consistency:** 2\\nRealism: 1\\nAesthetic Quality\\uff1a 0")
    {'consistency': 2, 'realism': 1, 'aesthetic_quality': 0}

    Raises:
        MalformedJudgement: naming the labels that are missing.
    """
    scores: dict[str, int] = {}
    for label, value in _LABELLED.findall(text):
        scores.setdefault(_LABELS[" ".join(label.lower().split())], int(value))
    if len(scores) == len(_LABELS):
        return {key: scores[key] for key in _LABELS.values()}
    lines = [line for line in text.strip().splitlines() if line.strip()]
    bare = [_BARE.fullmatch(line) for line in lines]
    if len(lines) == len(_LABELS) and all(bare):
        return dict(zip(_LABELS.values(), (int(match.group(1)) for match in bare), strict=True))
    missing = [label for label, key in _LABELS.items() if key not in scores]
    raise MalformedJudgement(f"no score for {', '.join(missing)} in the reply {text[:120]!r}")


def wiscore(consistency: int, realism: int, aesthetic_quality: int) -> float:
    """(0.7 consistency + 0.2 realism + 0.1 aesthetic) / 2, in [0, 1]."""
    return (0.7 * consistency + 0.2 * realism + 0.1 * aesthetic_quality) / 2


@dataclass(frozen=True)
class Judgement:
    """The judge's verdict on one image, or why there is none.

    `scores` is None exactly when `error` says why; `attempts` lists every failed try, one line each
    (timeouts, HTTP errors, bodies that are not chat completions, replies without the three scores);
    `raw` is the reply that parsed and `model` the model id the endpoint reported for it.
    """

    scores: dict[str, int] | None
    attempts: tuple[str, ...]
    raw: str | None = None
    model: str | None = None
    error: str | None = None


class WiseJudge:
    """Judges images with the legacy rubric through an OpenAI-compatible chat endpoint.

    A reply without the three scores is a failed try for the client, like a timeout or an HTTP 500: it
    is retried with backoff up to the client's `max_retries` (the legacy protocol allows 3) and recorded.

    Args:
        client: a `pdgen.judges.openai.ChatClient` whose `model` is the pinned judge id.
    """

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def messages(self, image: Image.Image, prompt: WisePrompt) -> list[dict[str, Any]]:
        """The chat request: the system message, then the rubric and the image as a PNG data URL."""
        rubric = RUBRIC.format(prompt=prompt.prompt, explanation=prompt.explanation)
        return [
            {"role": "system", "content": SYSTEM_MESSAGE},
            {"role": "user", "content": [text_part(rubric), image_part(image)]},
        ]

    def judge(self, image: Image.Image, prompt: WisePrompt) -> Judgement:
        """The scores of one image; a request that fails after the retries gives a `Judgement` with an
        `error`, never an exception, so one bad prompt does not end a run of a thousand."""
        try:
            reply = self.client.complete(self.messages(image, prompt), temperature=0.0, validate=_validate)
        except ChatError as error:
            return Judgement(None, tuple(error.attempts), error=f"judge gave no usable reply: {error}")
        scores = parse_judgement(reply.content)
        return Judgement(scores, tuple(reply.attempts), reply.content, reply.raw.get("model"))


def _validate(content: str) -> None:
    try:
        parse_judgement(content)
    except MalformedJudgement as error:
        raise InvalidReply(str(error), kind="malformed") from None


# --------------------------------------------------------------------------------------------------------
# Scoring a folder


def find_images(images: str | Path, prompts: Iterable[WisePrompt]) -> dict[int, Path]:
    """`prompt_id -> image` in `images`: WISE's own layout `<prompt_id>.png`, or else a pdgen prediction
    folder whose metadata.jsonl carries the prompt's `prompt_id` (its first sample image)."""
    root = Path(images)
    if not root.is_dir():
        raise UserError(f"WISE image folder {root} does not exist")
    wanted = {p.prompt_id for p in prompts}
    found = {pid: root / f"{pid}.png" for pid in wanted if (root / f"{pid}.png").is_file()}
    if any(sub.name.isdigit() and sub.is_dir() for sub in root.iterdir()):
        for folder in read_prompt_folders(root, require_tag=False):
            pid = folder.metadata.get("prompt_id")
            if pid in wanted and pid not in found and folder.images:
                found[pid] = folder.images[0]
    return found


def judge_images(
    prompt_set: WisePromptSet,
    images: str | Path,
    judge: WiseJudge,
    previous: Iterable[Mapping[str, Any]] = (),
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """One result row per prompt, in ID order: scores and WiScore, or an `error`.

    Args:
        prompt_set: the prompts.
        images: the image folder (see `find_images`).
        judge: the judge.
        previous: rows of an earlier run; those without an error are kept and not judged again.
        progress: called with (done, total) after each prompt.
    """
    paths = find_images(images, prompt_set.prompts)
    kept = {row["prompt_id"]: dict(row) for row in previous if row.get("error") is None}
    rows = []
    for done, prompt in enumerate(prompt_set.prompts, 1):
        if prompt.prompt_id in kept:
            rows.append(kept[prompt.prompt_id])
        else:
            rows.append(_judge_one(prompt, paths.get(prompt.prompt_id), judge))
        if progress is not None:
            progress(done, len(prompt_set.prompts))
    return rows


def _judge_one(prompt: WisePrompt, path: Path | None, judge: WiseJudge) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt_id": prompt.prompt_id,
        "category": prompt.category,
        "subcategory": prompt.subcategory,
        "filename": None if path is None else str(path),
    }
    if path is None:
        return {**row, "error": "no image", "attempts": []}
    try:
        image = open_image(path).convert("RGB")
    except UnreadableImage as error:  # a failed row, counted like a judge that gave no reply
        return {**row, "error": f"unreadable image: {error.why}", "attempts": []}
    judgement = judge.judge(image, prompt)
    row.update(judge_model=judgement.model, raw=judgement.raw, attempts=list(judgement.attempts))
    if judgement.scores is None:
        return {**row, "error": judgement.error}
    return {**row, **judgement.scores, "wiscore": wiscore(**judgement.scores), "error": None}


def summarize(rows: Sequence[Mapping[str, Any]], schema: WiseSchema) -> dict[str, Any]:
    """Per-category scores, both overalls and the failure count of judged rows (see the module doc).

    Raises:
        UserError: when no row has a score (naming how many failed).
    """
    judged = [row for row in rows if row.get("error") is None]
    failed = [row["prompt_id"] for row in rows if row.get("error") is not None]
    if not judged:
        raise UserError(f"no WISE prompt was judged ({len(failed)} failed): nothing to summarize")
    categories = {}
    for category in CATEGORIES:
        scores = [row["wiscore"] for row in judged if row["category"] == category]
        if scores:
            categories[category] = {"score": sum(scores) / len(scores), "images": len(scores)}
    weights = {category: schema.weight_of(category) for category in categories}
    weighted = sum(weights[c] * categories[c]["score"] for c in categories) / sum(weights.values())
    return {
        "schema": schema.name,
        "categories": categories,
        "overall_weighted": weighted,
        "overall_unweighted": sum(c["score"] for c in categories.values()) / len(categories),
        "image_mean": sum(row["wiscore"] for row in judged) / len(judged),
        "prompts": len(rows),
        "judged": len(judged),
        "failed": len(failed),
        "failed_ids": failed,
        "complete": len(judged) == FULL_SIZE,
    }
