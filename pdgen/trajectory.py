"""The trajectory, the one data type of pdgen, and its two exact representations.

A `Trajectory` is a prompt (plus an input image when editing) and the ordered steps the model takes:

    Plan(ins, des)         <ins>what to add or change</ins><des>the whole scene after it</des>
    Sketch(image)          <|vision_start|><|image_pad|><|vision_end|>   the draft for the plan before it
    Inspect(text, refine)  free critique text, ending in <refine>corrected instruction</refine> when wrong
    Refine(plan, image)    the corrected plan and image; written exactly like a Plan and its Sketch, and
                           recognised as a Refine because it follows an Inspect with <refine>

The order is fixed: a trajectory starts with a Plan; a Plan is followed by its Sketch; an Inspect follows an
image and is followed by a Plan, or by a Refine exactly when it holds a <refine>; the last step is an image
(a Sketch or a Refine), and that image is the answer. One exception: a picture drawn in one pass (single-pass
generation, a base-stage caption pair) is a trajectory of exactly one Sketch and nothing else.

Representation (a), the tagged text the model reads and writes, in Qwen2's chat frame with no spaces or
newlines between steps:

    <|im_start|>user\\n[<|vision_start|><|image_pad|><|vision_end|>]{prompt}<|im_end|>\\n<|im_start|>assistant\\n
    <ins>…</ins><des>…</des><|vision_start|><|image_pad|><|vision_end|>{critique}<refine>…</refine>…<|im_end|>

(one line in reality). The k-th `<|image_pad|>` stands for `trajectory.images[k]`, so text plus image list
round-trips exactly. Generation ends at the `<|im_end|>` right after a `<|vision_end|>` (`stop_index`).

Representation (b), the on-disk and shard form: `trajectory.json` plus numbered PNG files `00.png`,
`01.png`, … in the same image order (`to_files`/`from_files`, `save`/`load`).

There is no escaping: a text field that contains anything shaped like a tag (`<ins>`, `<|im_end|>`, `<b>`)
is refused when the step is built, because it would end the field early or be read as a tag. The parsers
are strict, and every error is a `TrajectoryError` that names where: a character offset into the text, or
a JSON path such as `$.steps[3].image`.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from PIL import Image

from pdgen.images import UnreadableImage, open_image
from pdgen.io import write_atomic

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
INS, INS_END = "<ins>", "</ins>"
DES, DES_END = "<des>", "</des>"
REFINE, REFINE_END = "<refine>", "</refine>"

SPECIAL_TOKENS = (IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD)
"""The Qwen2 special tokens of the tagged text (each one token in a Qwen2 tokenizer)."""
STEP_TAGS = (INS, INS_END, DES, DES_END, REFINE, REFINE_END)
"""pdgen's own step tags."""
KNOWN_TAGS = frozenset(SPECIAL_TOKENS + STEP_TAGS)

# What counts as a tag: `<|word|>` or `<word>` / `</word>`. Neither alternative can start inside a text
# field and end inside a neighbouring tag (each tag starts with `<`, which both exclude after their
# opening), so cutting the text at these matches is unambiguous once fields hold no matches themselves.
TAG_PATTERN = re.compile(r"<\|[^<>|\s]*\|>|</?[A-Za-z][A-Za-z0-9_]*>")

USER_TURN = IM_START + "user\n"
ASSISTANT_TURN = IM_END + "\n" + IM_START + "assistant\n"
"""What stands between the prompt and the first step."""

JSON_NAME = "trajectory.json"
FORMAT = "pdgen.trajectory/1"
"""The `format` field of every trajectory JSON document."""
IMAGE_MODES = ("RGB", "RGBA", "L")
"""Image modes that a PNG stores losslessly and that compare equal after a round trip."""


class TrajectoryError(ValueError):
    """A trajectory that breaks the format, with where: `offset` into the text or a JSON `path`.

    Args:
        message: what is wrong, without the location.
        offset: character offset into the tagged text.
        path: JSON path (`$.steps[3].image`), or a field name for a step built in Python.
    """

    def __init__(self, message: str, *, offset: int | None = None, path: str | None = None) -> None:
        self.message = message
        self.offset = offset
        self.path = path
        where = f"at offset {offset}: " if offset is not None else f"{path}: " if path else ""
        super().__init__(where + message)


# --------------------------------------------------------------------------------------------------------
# Steps


def _check_text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise TrajectoryError(f"expected a string, got {type(value).__name__}", path=field)
    if match := TAG_PATTERN.search(value):
        raise TrajectoryError(
            f"contains the tag-like string {match.group()!r} at position {match.start()}; text fields cannot "
            "hold tags, because the tagged text has no escaping",
            path=field,
        )
    return value


def _check_image(value: object, field: str) -> Image.Image:
    """A detached copy with no metadata: a step's image is its mode, size and pixels."""
    if not isinstance(value, Image.Image):
        raise TrajectoryError(f"expected a PIL image, got {type(value).__name__}", path=field)
    if value.mode not in IMAGE_MODES:
        raise TrajectoryError(f"image mode {value.mode!r} is not one of {', '.join(IMAGE_MODES)}", path=field)
    if 0 in value.size:
        raise TrajectoryError(f"image of size {value.size} is empty", path=field)
    image = value.copy()  # loads a lazily opened file and gives the plain `Image` class, which `==` checks
    image.info = {}
    return image


@dataclass(frozen=True)
class Plan:
    """The incremental instruction and the description of the whole scene after it.

    Args:
        ins: what this step adds or changes, written as `<ins>…</ins>`.
        des: the global scene description once the step is done, written as `<des>…</des>`.
    """

    ins: str
    des: str

    def __post_init__(self) -> None:
        _check_text(self.ins, "ins")
        _check_text(self.des, "des")


@dataclass(frozen=True)
class Sketch:
    """The draft image for the Plan right before it.

    Args:
        image: an RGB, RGBA or L image; it is copied and its metadata dropped.
    """

    image: Image.Image

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", _check_image(self.image, "image"))


@dataclass(frozen=True)
class Inspect:
    """A critique of the image before it; `refine` is set when it found something to correct.

    Args:
        text: the critique, free text; may be empty only when `refine` is given.
        refine: the corrected instruction, written as `<refine>…</refine>` after the text; a Refine follows.
    """

    text: str
    refine: str | None = None

    def __post_init__(self) -> None:
        _check_text(self.text, "text")
        if self.refine is not None:
            _check_text(self.refine, "refine")
        elif not self.text:
            raise TrajectoryError("an Inspect needs critique text or a refine", path="text")


@dataclass(frozen=True)
class Refine:
    """The corrected plan and image that answer an Inspect's `<refine>`.

    Args:
        plan: the corrected plan.
        image: the corrected image; copied as for `Sketch`.
    """

    plan: Plan
    image: Image.Image

    def __post_init__(self) -> None:
        if not isinstance(self.plan, Plan):
            raise TrajectoryError(f"expected a Plan, got {type(self.plan).__name__}", path="plan")
        object.__setattr__(self, "image", _check_image(self.image, "image"))


Step = Plan | Sketch | Inspect | Refine


def _order_problem(steps: Sequence[object]) -> tuple[int | None, str] | None:
    """The first break of the step order as (step index, message); index None means "no steps at all".

    The one statement of the order rule: `Trajectory` reports it with a JSON path, the text parser with
    the offset where the step starts.
    """
    if not steps:
        return None, "a trajectory needs at least one Plan and its Sketch"
    if isinstance(steps[0], Sketch) and len(steps) > 1:
        return 1, "a trajectory that starts with its image is drawn in one pass and has no other step"
    before: object = None
    for index, step in enumerate(steps):
        if not isinstance(step, Plan | Sketch | Inspect | Refine):
            return index, f"expected a Plan, Sketch, Inspect or Refine, got {type(step).__name__}"
        if isinstance(step, Refine) and not (isinstance(before, Inspect) and before.refine is not None):
            return index, f"a Refine must follow an Inspect with <refine>, not {_describe_step(before)}"
        allowed, rule = _FOLLOWERS[_step_kind(before)]
        if not isinstance(step, allowed):
            return index, f"{rule}, not {_describe_step(step)}"
        before = step
    if isinstance(before, Sketch | Refine):
        return None
    if isinstance(before, Plan):
        problem = "the last Plan has no Sketch"
    elif before.refine is not None:
        problem = "the last Inspect's <refine> has no Refine"
    else:
        problem = f"the steps end with {_describe_step(before)}"
    return len(steps) - 1, f"{problem}; a trajectory ends with an image, the answer"


def _step_kind(step: object) -> str:
    if isinstance(step, Inspect):
        return "inspect+refine" if step.refine is not None else "inspect"
    return "start" if step is None else type(step).__name__.lower()


_FOLLOWERS: dict[str, tuple[tuple[type, ...], str]] = {
    "start": ((Plan, Sketch), "a trajectory starts with a Plan (or is one Sketch, drawn in one pass)"),
    "plan": ((Sketch,), "after a Plan comes its Sketch"),
    "sketch": ((Plan, Inspect), "after an image comes a Plan or an Inspect"),
    "refine": ((Plan, Inspect), "after an image comes a Plan or an Inspect"),
    "inspect": ((Plan,), "after an Inspect without <refine> comes a Plan"),
    "inspect+refine": ((Refine,), "after an Inspect with <refine> comes the Refine"),
}
"""What may follow each kind of step, and the rule to quote when something else does."""


def _describe_step(step: object) -> str:
    if step is None:
        return "the start"
    if isinstance(step, Inspect):
        shown = step.text if len(step.text) <= 24 else step.text[:21] + "..."
        return f"an Inspect ({shown!r})" if step.text else "an Inspect"
    return f"a {type(step).__name__}"


# --------------------------------------------------------------------------------------------------------
# The trajectory and its tagged text

Role = Literal["context", "plan", "inspect", "special", "image"]


@dataclass(frozen=True)
class Segment:
    """A piece of the tagged text with its training role; the segments concatenate to `to_text()`.

    Roles: `context` is what the generator is given (user turn, input image, assistant header); `plan` is
    `<ins>…</des>`; `inspect` is critique text with its `<refine>…</refine>`; `special` are the vision
    markers around generated images and the final `<|im_end|>`; `image` is the `<|image_pad|>` of a
    generated image. `image` is the index into `Trajectory.images` of a placeholder (also for the input
    image, whose placeholder is `context`).
    """

    text: str
    role: Role
    image: int | None = None


@dataclass(frozen=True)
class Trajectory:
    """A prompt, an optional input image, and the steps that build the answer image.

    Args:
        prompt: the user's request (not empty).
        steps: the steps in order (stored as a tuple); see the module docstring for the order rule.
        input_image: the image to edit, for editing tasks.

    Raises:
        TrajectoryError: a field holds a tag, an image is unusable, or the steps are out of order; its
            `path` is JSON-style (`$.steps[3]`).
    """

    prompt: str
    steps: Sequence[Step]
    input_image: Image.Image | None = None

    def __post_init__(self) -> None:
        if not _check_text(self.prompt, "$.prompt"):
            # An empty prompt would also put <|vision_end|><|im_end|> (the stop signal) into the user turn.
            raise TrajectoryError("the prompt is empty", path="$.prompt")
        if self.input_image is not None:
            object.__setattr__(self, "input_image", _check_image(self.input_image, "$.input_image"))
        if isinstance(self.steps, str | bytes) or not isinstance(self.steps, Sequence):
            raise TrajectoryError(
                f"expected a sequence of steps, got {type(self.steps).__name__}", path="$.steps"
            )
        object.__setattr__(self, "steps", tuple(self.steps))
        if problem := _order_problem(self.steps):
            index, message = problem
            raise TrajectoryError(message, path="$.steps" if index is None else f"$.steps[{index}]")

    @property
    def images(self) -> list[Image.Image]:
        """Every image in text order: the input image first when there is one, then each step's image."""
        images = [self.input_image] if self.input_image is not None else []
        return images + [step.image for step in self.steps if isinstance(step, Sketch | Refine)]

    @property
    def answer(self) -> Image.Image:
        """The last image, the result of the generation."""
        return self.images[-1]

    def segments(self) -> list[Segment]:
        """The tagged text cut into pieces with their training roles (see `Segment`)."""
        out = [Segment(USER_TURN, "context")]
        next_image = 0
        if self.input_image is not None:
            out += [
                Segment(VISION_START, "context"),
                Segment(IMAGE_PAD, "context", 0),
                Segment(VISION_END, "context"),
            ]
            next_image = 1
        out += [Segment(self.prompt, "context"), Segment(ASSISTANT_TURN, "context")]
        for step in self.steps:
            if isinstance(step, Plan | Refine):
                plan = step if isinstance(step, Plan) else step.plan
                out.append(Segment(f"{INS}{plan.ins}{INS_END}{DES}{plan.des}{DES_END}", "plan"))
            if isinstance(step, Inspect):
                refine = "" if step.refine is None else f"{REFINE}{step.refine}{REFINE_END}"
                out.append(Segment(step.text + refine, "inspect"))
            if isinstance(step, Sketch | Refine):
                out += [Segment(VISION_START, "special"), Segment(IMAGE_PAD, "image", next_image)]
                out.append(Segment(VISION_END, "special"))
                next_image += 1
        out.append(Segment(IM_END, "special"))
        return out

    def to_text(self) -> str:
        """The tagged text; the k-th `<|image_pad|>` stands for `self.images[k]`."""
        return "".join(segment.text for segment in self.segments())

    @classmethod
    def from_text(cls, text: str, images: Sequence[Image.Image]) -> Trajectory:
        """Parse tagged text, the k-th `<|image_pad|>` taking `images[k]`.

        Raises:
            TrajectoryError: with the character `offset` of the first problem (unclosed, nested or unknown
                tags, text that is not a step, an image outside vision markers, steps out of order), or
                with `path="images"` when there are more images than placeholders.
        """
        return _Parser(text, images).trajectory()

    # ----------------------------------------------------------------------------------------------------
    # JSON document + PNG files

    def to_json(self) -> tuple[dict[str, Any], dict[str, Image.Image]]:
        """The JSON document and its images by file name (`00.png`, `01.png`, … in `images` order)."""
        names = iter(_image_name(index) for index in range(len(self.images)))
        steps: list[dict[str, Any]] = []
        document = {
            "format": FORMAT,
            "prompt": self.prompt,
            "input_image": next(names) if self.input_image is not None else None,
            "steps": steps,
        }
        for step in self.steps:
            if isinstance(step, Plan):
                steps.append({"kind": "plan", "ins": step.ins, "des": step.des})
            elif isinstance(step, Sketch):
                steps.append({"kind": "sketch", "image": next(names)})
            elif isinstance(step, Inspect):
                steps.append({"kind": "inspect", "text": step.text, "refine": step.refine})
            else:
                plan = {"ins": step.plan.ins, "des": step.plan.des}
                steps.append({"kind": "refine", "plan": plan, "image": next(names)})
        return document, {_image_name(index): image for index, image in enumerate(self.images)}

    @classmethod
    def from_json(cls, document: object, images: Mapping[str, Image.Image | bytes]) -> Trajectory:
        """Build a trajectory from its JSON document; `images` maps file names to images or PNG bytes.

        Raises:
            TrajectoryError: with the JSON `path` of the first problem, e.g. `$.steps[3].image`.
        """
        return _JsonReader(images).trajectory(document)

    def to_files(self) -> dict[str, bytes]:
        """`trajectory.json` and the PNGs as bytes, ready for a webdataset sample or a directory."""
        document, images = self.to_json()
        files = {JSON_NAME: (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode("utf-8")}
        for name, image in images.items():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            files[name] = buffer.getvalue()
        return files

    @classmethod
    def from_files(cls, files: Mapping[str, Any]) -> Trajectory:
        """Inverse of `to_files`; also takes a decoded webdataset sample.

        `trajectory.json` may be bytes, str or an already decoded dict; images may be PNG bytes or PIL
        images; keys starting with `__` (webdataset's `__key__`, `__url__`) are ignored. Trap: webdataset's
        `.decode("pil")` converts every image to RGB, so L and RGBA images only survive a raw sample.
        """
        if JSON_NAME not in files:
            raise TrajectoryError(f"no {JSON_NAME} among the files {sorted(files)}", path=JSON_NAME)
        raw = files[JSON_NAME]
        if isinstance(raw, bytes | str):
            try:
                document = json.loads(raw)
            except ValueError as error:
                raise TrajectoryError(f"not valid JSON ({error})", path=JSON_NAME) from error
        else:
            document = raw
        images = {
            name: value for name, value in files.items() if name != JSON_NAME and not name.startswith("__")
        }
        return cls.from_json(document, images)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write `trajectory.json` and the PNGs into `directory` (created if needed), each file atomically.

        The JSON document is written last, so a directory with a `trajectory.json` is complete.
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        files = self.to_files()
        for name in sorted(files, key=lambda name: name == JSON_NAME):
            write_atomic(path / name, files[name])
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Trajectory:
        """Read a directory written by `save`."""
        path = Path(directory)
        files: dict[str, bytes] = {}
        for file in path.iterdir():
            if file.name == JSON_NAME or file.suffix == ".png":
                files[file.name] = file.read_bytes()
        try:
            return cls.from_files(files)
        except TrajectoryError as error:
            raise TrajectoryError(f"{error.message} (in {path})", path=error.path) from error


def _image_name(index: int) -> str:
    return f"{index:02d}.png"


# --------------------------------------------------------------------------------------------------------
# Parsing the tagged text


@dataclass(frozen=True)
class _Token:
    """A tag, a run of text between tags, or the end of the text ("end", value "")."""

    kind: Literal["tag", "text", "end"]
    value: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.value)

    def is_tag(self, *tags: str) -> bool:
        return self.kind == "tag" and self.value in tags

    def __str__(self) -> str:
        if self.kind == "end":
            return "the end of the text"
        shown = self.value if len(self.value) <= 24 else self.value[:21] + "..."
        return f"{shown!r}" if self.kind == "tag" else f"text {shown!r}"


def _token_at(text: str, start: int = 0) -> _Token:
    """The token at `start`; an unknown tag there is an error."""
    if start >= len(text):
        return _Token("end", "", len(text))
    if match := TAG_PATTERN.match(text, start):
        if match.group() not in KNOWN_TAGS:
            raise TrajectoryError(f"unknown tag {match.group()!r}", offset=start)
        return _Token("tag", match.group(), start)
    following = TAG_PATTERN.search(text, start)
    return _Token("text", text[start : following.start() if following else len(text)], start)


class _Parser:
    """Recursive descent over the tagged text; each method consumes one construct or raises at its offset."""

    def __init__(self, text: str, images: Sequence[Image.Image]) -> None:
        if not isinstance(text, str):
            raise TrajectoryError(
                f"expected the tagged text as a string, got {type(text).__name__}", offset=0
            )
        self.text = text
        self.images = [_check_image(image, f"images[{index}]") for index, image in enumerate(images)]
        self.position = 0
        self.images_used = 0

    def peek(self) -> _Token:
        return _token_at(self.text, self.position)

    def take(self) -> _Token:
        token = self.peek()
        self.position = token.end
        return token

    def expect_literal(self, literal: str, what: str) -> None:
        """Consume `literal`, or fail at the first character that differs from it."""
        found = self.text[self.position : self.position + len(literal)]
        if found != literal:
            mismatch = next(
                (i for i, (a, b) in enumerate(zip(found, literal, strict=False)) if a != b), len(found)
            )
            raise TrajectoryError(f"expected {what} {literal!r}", offset=self.position + mismatch)
        self.position += len(literal)

    def out_of_place(self, token: _Token, where: str) -> TrajectoryError:
        """The error for a token that cannot stand here."""
        if token.is_tag(IMAGE_PAD):
            return TrajectoryError(f"{IMAGE_PAD} outside {VISION_START}…{VISION_END}", offset=token.start)
        if token.is_tag(INS_END, DES_END, REFINE_END, VISION_END):
            return TrajectoryError(f"{token} closes a tag that is not open", offset=token.start)
        if token.kind == "end":
            return TrajectoryError(f"the text ends {where}; expected the final {IM_END}", offset=token.start)
        return TrajectoryError(f"unexpected {token} {where}", offset=token.start)

    # The frame ----------------------------------------------------------------------------------------------

    def trajectory(self) -> Trajectory:
        self.expect_literal(USER_TURN, "the user turn")
        input_image = self.vision_block() if self.peek().is_tag(VISION_START) else None
        if self.peek().is_tag(IM_END):
            raise TrajectoryError("the prompt is empty", offset=self.position)
        prompt = self.take().value if self.peek().kind == "text" else ""
        if not self.peek().is_tag(IM_END):
            raise self.out_of_place(self.peek(), "in the user turn")
        self.expect_literal(ASSISTANT_TURN, "the assistant turn")
        steps, offsets = self.body()
        end = self.position
        self.take()  # the final <|im_end|>, which `body` stopped at
        if self.position != len(self.text):
            raise TrajectoryError(f"text after the final {IM_END}", offset=self.position)
        if self.images_used != len(self.images):
            raise TrajectoryError(
                f"{len(self.images)} images given for {self.images_used} {IMAGE_PAD} placeholders",
                path="images",
            )
        if problem := _order_problem(steps):
            index, message = problem
            raise TrajectoryError(message, offset=end if index is None else offsets[index])
        return Trajectory(prompt, steps, input_image)

    # The steps ----------------------------------------------------------------------------------------------

    def body(self) -> tuple[list[Step], list[int]]:
        """The assistant's steps up to the final `<|im_end|>`, with the offset where each starts.

        Steps are read one construct at a time (a Plan, an image, an Inspect); the order is checked
        afterwards by `_order_problem`, the rule `Trajectory` itself applies.
        """
        steps: list[Step] = []
        offsets: list[int] = []
        while not (token := self.peek()).is_tag(IM_END):
            if token.is_tag(INS):
                step: Step = self.plan()
            elif token.is_tag(VISION_START):
                step = Sketch(self.vision_block())
            elif token.kind == "text" or token.is_tag(REFINE):
                step = self.inspect()
            else:
                raise self.out_of_place(token, "between steps")
            refine_asked = bool(steps) and isinstance(steps[-1], Inspect) and steps[-1].refine is not None
            if refine_asked and isinstance(step, Plan) and self.peek().is_tag(VISION_START):
                step = Refine(step, self.vision_block())  # after a <refine>, a plan and image are the Refine
            steps.append(step)
            offsets.append(token.start)
        return steps, offsets

    def plan(self) -> Plan:
        ins = self.enclosed(INS, INS_END)
        if not (token := self.peek()).is_tag(DES):
            if token.kind == "text":
                raise TrajectoryError(f"text between {INS_END} and {DES}", offset=token.start)
            raise self.out_of_place(token, f"where {DES} must follow {INS_END}")
        return Plan(ins, self.enclosed(DES, DES_END))

    def inspect(self) -> Inspect:
        text = self.take().value if self.peek().kind == "text" else ""
        refine = self.enclosed(REFINE, REFINE_END) if self.peek().is_tag(REFINE) else None
        if refine is not None and (token := self.peek()).kind == "text":
            raise TrajectoryError(
                f"text after {REFINE_END}: an inspection ends with its refine", offset=token.start
            )
        return Inspect(text, refine)

    def enclosed(self, opening: str, closing: str) -> str:
        """The text between `opening` (the current token) and `closing`."""
        opener = self.take()
        assert opener.is_tag(opening), opener
        content = self.take().value if self.peek().kind == "text" else ""
        token = self.peek()
        if token.is_tag(closing):
            self.take()
            return content
        if token.is_tag(INS, DES, REFINE, VISION_START):
            raise TrajectoryError(
                f"{token} inside {opening} (opened at offset {opener.start})", offset=token.start
            )
        if token.is_tag(IMAGE_PAD):
            raise self.out_of_place(token, "")
        raise TrajectoryError(
            f"unclosed {opening}: {token} at offset {token.start} comes before {closing}", offset=opener.start
        )

    def vision_block(self) -> Image.Image:
        """`<|vision_start|><|image_pad|><|vision_end|>`, and the image its placeholder stands for."""
        opener = self.take()
        token = self.take()
        if not token.is_tag(IMAGE_PAD):
            raise self.inside_vision(token, opener, "has no image")
        if self.images_used == len(self.images):
            raise TrajectoryError(
                f"no image for this placeholder, images[{self.images_used}]: {len(self.images)} images given",
                offset=token.start,
            )
        image = self.images[self.images_used]
        self.images_used += 1
        token = self.take()
        if not token.is_tag(VISION_END):
            raise self.inside_vision(token, opener, "holds more than one image")
        return image

    def inside_vision(self, token: _Token, opener: _Token, many: str) -> TrajectoryError:
        if token.kind == "text":
            return TrajectoryError(f"text inside {VISION_START}…{VISION_END}", offset=token.start)
        if token.is_tag(VISION_END):
            return TrajectoryError(
                f"the vision block opened at offset {opener.start} {many}", offset=token.start
            )
        if token.is_tag(IMAGE_PAD):
            return TrajectoryError(
                f"the vision block opened at offset {opener.start} {many}", offset=token.start
            )
        if token.is_tag(INS, DES, REFINE, VISION_START):
            return TrajectoryError(
                f"{token} inside {VISION_START} (opened at offset {opener.start})", offset=token.start
            )
        return TrajectoryError(
            f"unclosed {VISION_START}: {token} at offset {token.start} comes before {VISION_END}",
            offset=opener.start,
        )


# --------------------------------------------------------------------------------------------------------
# Reading the JSON document


class _JsonReader:
    """Checks a JSON document field by field, naming the JSON path of the first problem."""

    def __init__(self, images: Mapping[str, Image.Image | bytes]) -> None:
        self.images = images

    def trajectory(self, document: object) -> Trajectory:
        fields = self.fields(document, "$", {"format", "prompt", "input_image", "steps"})
        if fields["format"] != FORMAT:
            raise TrajectoryError(f"format is {fields['format']!r}, expected {FORMAT!r}", path="$.format")
        prompt = self.string(fields["prompt"], "$.prompt")
        input_image = (
            None if fields["input_image"] is None else self.image(fields["input_image"], "$.input_image")
        )
        if not isinstance(fields["steps"], list):
            raise TrajectoryError(f"expected a list, got {_json_type(fields['steps'])}", path="$.steps")
        steps = [self.step(step, f"$.steps[{index}]") for index, step in enumerate(fields["steps"])]
        return Trajectory(prompt, steps, input_image)

    def step(self, value: object, path: str) -> Step:
        if not isinstance(value, dict):
            raise TrajectoryError(f"expected an object, got {_json_type(value)}", path=path)
        keys = {
            "plan": {"kind", "ins", "des"},
            "sketch": {"kind", "image"},
            "inspect": {"kind", "text", "refine"},
            "refine": {"kind", "plan", "image"},
        }
        kind = value.get("kind")
        if kind not in keys:
            raise TrajectoryError(
                f"unknown step kind {kind!r}; expected one of {', '.join(keys)}", path=f"{path}.kind"
            )
        fields = self.fields(value, path, keys[kind])
        try:
            if kind == "plan":
                return Plan(
                    self.string(fields["ins"], f"{path}.ins"), self.string(fields["des"], f"{path}.des")
                )
            if kind == "sketch":
                return Sketch(self.image(fields["image"], f"{path}.image"))
            if kind == "inspect":
                refine = None if fields["refine"] is None else self.string(fields["refine"], f"{path}.refine")
                return Inspect(self.string(fields["text"], f"{path}.text"), refine)
            plan_fields = self.fields(fields["plan"], f"{path}.plan", {"ins", "des"})
            plan = Plan(
                self.string(plan_fields["ins"], f"{path}.plan.ins"),
                self.string(plan_fields["des"], f"{path}.plan.des"),
            )
            return Refine(plan, self.image(fields["image"], f"{path}.image"))
        except TrajectoryError as error:
            if error.path is not None and error.path.startswith("$"):
                raise
            # A step's own check names its field ("ins"); put it under this step's path.
            raise TrajectoryError(error.message, path=f"{path}.{error.path}") from error

    def fields(self, value: object, path: str, expected: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise TrajectoryError(f"expected an object, got {_json_type(value)}", path=path)
        for key in value:
            if key not in expected:
                raise TrajectoryError(
                    f"unknown key; expected {', '.join(sorted(expected))}", path=f"{path}.{key}"
                )
        for key in sorted(expected):
            if key not in value:
                raise TrajectoryError("missing", path=f"{path}.{key}")
        return value

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise TrajectoryError(f"expected a string, got {_json_type(value)}", path=path)
        return _check_text(value, path)

    def image(self, name: object, path: str) -> Image.Image:
        if not isinstance(name, str):
            raise TrajectoryError(f"expected an image file name, got {_json_type(name)}", path=path)
        if name not in self.images:
            raise TrajectoryError(
                f"no image file {name!r} (have {', '.join(sorted(self.images)) or 'none'})", path=path
            )
        value = self.images[name]
        if isinstance(value, bytes):
            try:
                value = open_image(value, name, formats=["PNG"])
            except UnreadableImage as error:  # readers count it apart from the JSON (its __cause__)
                raise TrajectoryError(f"{name} is not a readable PNG ({error.why})", path=path) from error
        return _check_image(value, path)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


# --------------------------------------------------------------------------------------------------------
# The stop rule

T = TypeVar("T")


def stop_index(tokens: Sequence[T], vision_end: T, im_end: T) -> int | None:
    """Where generation ends: the index of the first `im_end` that comes right after a `vision_end`.

    The paper's rule: the model may emit `<|im_end|>` after text (inside the loop), but an `<|im_end|>`
    right after `<|vision_end|>` ends the whole generation, and the image just closed is the answer.
    Works on any sequence: token ids with the tokenizer's ids, or tag strings.

    >>> stop_index([5, 151653, 7, 151653, 151645, 9], vision_end=151653, im_end=151645)
    4
    """
    for index in range(1, len(tokens)):
        if tokens[index] == im_end and tokens[index - 1] == vision_end:
            return index
    return None


def answer_span(tokens: Sequence[T], vision_start: T, vision_end: T, im_end: T) -> tuple[int, int] | None:
    """The answer image's tokens as `(start, end)` (between its vision markers), or None before the stop.

    Raises:
        TrajectoryError: the stopping `vision_end` has no `vision_start` before it (offset: its index).
    """
    stop = stop_index(tokens, vision_end, im_end)
    if stop is None:
        return None
    closing = stop - 1
    for index in range(closing - 1, -1, -1):
        if tokens[index] == vision_start:
            return index + 1, closing
        if tokens[index] == vision_end:
            break
    raise TrajectoryError("the final vision_end token has no vision_start before it", offset=closing)


def stop_offset(text: str) -> int | None:
    """`stop_index` on tagged text: the character offset of the `<|im_end|>` that ends generation."""
    tokens: list[_Token] = []
    while (token := _token_at(text, tokens[-1].end if tokens else 0)).kind != "end":
        tokens.append(token)
    index = stop_index([token.value if token.kind == "tag" else None for token in tokens], VISION_END, IM_END)
    return None if index is None else tokens[index].start
