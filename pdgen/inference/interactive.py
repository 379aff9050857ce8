"""`Interactive`: a person in the loop, on a terminal (``pdgen predict --data.interactive true``).

The paper names human intervention in the reasoning process as future work; here it is a `Reviewer`
(`pdgen.inference.control`) that reads answers from a text stream, a line each. Before the first plan the
user may type it (enter lets the model plan). Every text the model writes (a plan, an inspection) is shown
before the loop goes on, and may be accepted, edited or vetoed::

    plan: <ins>Add a red circle.</ins><des>A red circle.</des>
      enter: accept · r: draw the last plan again instead
      or type a replacement: a plan <ins>…</ins><des>…</des>, or a critique [<refine>…</refine>]
    >

- **accept** (enter, or the end of the stream): the model's text stays and the model decides what follows;
- **edit**: the typed text replaces the model's *in place*: the loop takes the model's segment back out of
  its context and writes the typed one, so the run goes on exactly as if the user had dictated it. A
  typed plan is drawn next; a typed critique is the inspection, and with a ``<refine>`` the model then
  writes the corrected plan and redraws it (a Refine), as if its own inspector had said so;
- **veto**: ``r`` replaces the text with the last plan, drawn again (Plan, Sketch, Plan, Sketch); to stop,
  answer ``s`` at the image before.

After every image the loop stops and asks::

    [image 1] 32x32, saved to /tmp/pdgen-interactive-…/1.png
      the model wants to continue
      enter: accept · s: stop here (this image is the answer) · r: redraw the last plan
      or type the next step yourself: a plan <ins>…</ins><des>…</des>, or a critique [<refine>…</refine>]
    >

with the same answers, plus ``s``: stop with this image as the answer (a veto of the model's next step).
A step typed here is written without the model writing one first.

A typed line is checked before it is used: only pdgen's step tags may appear in it (``<ins>``, ``<des>``,
``<refine>`` and their closing tags), a plan must be exactly ``<ins>…</ins><des>…</des>``, and only a
text right after an image may be an inspection (the others are plans); otherwise the question is asked
again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TextIO

from pdgen.inference.control import LoopState
from pdgen.trajectory import IM_END, IM_START, STEP_TAGS, TAG_PATTERN, VISION_START

PLAN_PATTERN = re.compile(r"<ins>[^<>]+</ins><des>[^<>]+</des>")
"""A whole plan, as the model writes one."""
CRITIQUE_PATTERN = re.compile(r"[^<>]*(<refine>[^<>]+</refine>)?")
"""An inspection: free text, optionally ending in a ``<refine>`` instruction."""

STOP, REDRAW = "s", "r"


class Interactive:
    """Shows each step on `output` and lets the user accept, edit or veto it (module docstring).

    Args:
        input: where the answers are read from, a line each (``sys.stdin``; tests pass an ``io.StringIO``).
        output: where the steps and questions are written (``sys.stdout``).
        image_dir: if given, every image is saved there as ``<n>.png`` so it can be opened while the loop
            waits; otherwise only its size is shown.
    """

    def __init__(self, input: TextIO, output: TextIO, image_dir: str | Path | None = None) -> None:
        self.input = input
        self.output = output
        self.image_dir = None if image_dir is None else Path(image_dir)
        self.queued: str | None = None  # the user's text for the next segment
        self.typed: str | None = None  # the user's text just written, until the decision after it

    def write(self, state: LoopState) -> str | None:
        if state.after == "prompt":
            self._say(f"prompt: {state.prompt}")
            self.queued = self._step(
                state, "enter: the model writes the first plan · or type it: <ins>…</ins><des>…</des>"
            )
        self.typed, self.queued = self.queued, None
        if self.typed is not None:
            self._say(f"  {_kind(self.typed)} (yours): {self.typed}")
        return self.typed

    def review(self, state: LoopState, text: str) -> str | None:
        self._say(f"  {_kind(text)}: {text}")
        replacement = "a plan <ins>…</ins><des>…</des>" + (
            ", or a critique [<refine>…</refine>]" if state.after == "image" else ""
        )
        question = (
            f"enter: accept · r: draw the last plan again instead\n  or type a replacement: {replacement}"
        )
        self.typed = self._step(state, question)
        if self.typed is not None:
            self._say(f"  {_kind(self.typed)} (yours): {self.typed}")
        return self.typed

    def decide(self, state: LoopState, options: tuple[str, ...], proposed: str) -> str:
        if state.after == "text":
            typed, self.typed = self.typed, None
            if typed is None:
                return proposed
            # The user's plan is drawn; after the user's critique comes a plan (or a Refine's plan).
            return VISION_START if _kind(typed) == "plan" else IM_START
        self._say(self._describe_image(state))
        self._say(f"  the model wants to {'stop' if proposed == IM_END else 'continue'}")
        question = (
            "enter: accept · s: stop here (this image is the answer) · r: redraw the last plan\n"
            "  or type the next step yourself: a plan <ins>…</ins><des>…</des>, or a critique "
            "[<refine>…</refine>]"
        )
        self.queued = self._step(state, question, stop=True)
        if self.queued == STOP:
            self.queued = None
            return IM_END
        return proposed if self.queued is None else IM_START

    def _step(self, state: LoopState, question: str, stop: bool = False) -> str | None:
        """Asks `question` until the answer is usable: None (enter), a checked step, the last plan for
        ``r``, or `STOP` for ``s`` when `stop` is offered."""
        while True:
            answer = self._ask(question)
            if not answer:
                return None
            if answer == STOP:
                if stop:
                    return STOP
                # Not a one-letter critique: stopping takes the decision after an image.
                self._say("  not used: s (stop) is answered after an image; accept or replace this text")
                continue
            if answer == REDRAW:
                plans = PLAN_PATTERN.findall(state.text)
                if plans:
                    return plans[-1]
                self._say("  not used: there is no plan to redraw yet")
                continue
            # Only right after an image may a text be an inspection; every other text is a plan (training's
            # order: the first text, the text after an inspection).
            problem = _problem(answer, plan_only=state.after != "image")
            if problem is None:
                return answer
            self._say(f"  not used: {problem}")

    def _ask(self, question: str) -> str:
        """The user's answer to `question`, stripped; the end of the input stream answers "" (accept)."""
        self.output.write(f"  {question}\n> ")
        self.output.flush()
        return self.input.readline().strip()

    def _describe_image(self, state: LoopState) -> str:
        number = len(state.images)
        image = state.images[-1]
        line = f"[image {number}] {image.width}x{image.height}"
        if self.image_dir is not None:
            self.image_dir.mkdir(parents=True, exist_ok=True)
            path = self.image_dir / f"{number}.png"
            image.save(path)
            line += f", saved to {path}"
        return line

    def _say(self, line: str) -> None:
        self.output.write(line + "\n")
        self.output.flush()


def _kind(text: str) -> str:
    """What a step's text is: a ``plan`` or an ``inspection``."""
    return "plan" if PLAN_PATTERN.fullmatch(text) else "inspection"


def _problem(text: str, plan_only: bool) -> str | None:
    """Why a typed step cannot be used, or None; `plan_only`: only a plan may come here."""
    foreign = [tag for tag in TAG_PATTERN.findall(text) if tag not in STEP_TAGS]
    if foreign:
        return f"{foreign[0]!r} is not a step tag (only {', '.join(STEP_TAGS)})"
    if plan_only or "<ins>" in text or "<des>" in text:
        return None if PLAN_PATTERN.fullmatch(text) else "a plan is exactly <ins>…</ins><des>…</des>"
    if not CRITIQUE_PATTERN.fullmatch(text):
        return "a critique is free text, optionally ending in <refine>…</refine>"
    return None
