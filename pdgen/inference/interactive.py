"""`Interactive`: a person in the loop, on a terminal (``pdgen predict --data.interactive true``).

The paper names human intervention in the reasoning process as future work; here it is a `Controller`
(`pdgen.inference.control`) that reads answers from a text stream, a line each. Before the first plan the
user may type it (enter lets the model plan); every text the loop writes (a plan, an inspection) is shown
as it is finished; and after every image the loop stops and asks::

    [image 1] 32x32, saved to /tmp/pdgen-interactive-…/1.png
      the model wants to continue
      enter: accept · s: stop here (this image is the answer) · r: redraw the last plan
      or type the next step yourself: a plan <ins>…</ins><des>…</des>, or a critique [<refine>…</refine>]
    >

- **accept** (enter, or the end of the stream): the model's own choice, continue or stop;
- **veto**: ``s`` stops with this image as the answer; ``r`` draws the last plan again (written again after
  the image, so the trajectory stays valid: Plan, Sketch, Plan, Sketch);
- **edit**: a typed plan is drawn next (the draw is forced) in place of what the model would have planned;
  a typed critique is the inspection of this image, and with a ``<refine>`` the model then writes the
  corrected plan and redraws it (a Refine), as if its own inspector had said so.

A typed line is checked before it is used: only pdgen's step tags may appear in it (``<ins>``, ``<des>``,
``<refine>`` and their closing tags), and a plan must be exactly ``<ins>…</ins><des>…</des>``; otherwise the
question is asked again. What the model has already written stays: replacing a text after the model wrote
it, before the image is drawn, would need the loop to take a segment back out of its KV cache.
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
    """Shows each step on `output`, and after each image lets the user accept, stop, redraw or write the next
    step (module docstring).

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
        self.shown = 0  # how much of the loop's tagged text has been shown
        self.queued: str | None = None  # the user's text for the next segment
        self.typed: str | None = None  # the user's text just written, until the decision after it

    def write(self, state: LoopState) -> str | None:
        if state.after == "prompt":
            self._say(f"prompt: {state.prompt}")
            answer = self._ask(
                "enter: the model writes the first plan · or type it: <ins>…</ins><des>…</des>"
            )
            while answer and (problem := _problem(answer, plan_only=True)):
                self._say(f"  not used: {problem}")
                answer = self._ask("enter: the model plans · or type a plan <ins>…</ins><des>…</des>")
            self.queued = answer or None
        self.typed, self.queued = self.queued, None
        return self.typed

    def decide(self, state: LoopState, options: tuple[str, ...], proposed: str) -> str:
        new = state.text[self.shown :]
        self.shown = len(state.text)
        if state.after == "text":
            typed, self.typed = self.typed, None
            is_plan = PLAN_PATTERN.fullmatch(new) is not None
            self._say(f"  {'plan' if is_plan else 'inspection'}{' (yours)' if typed else ''}: {new}")
            if typed is None:
                return proposed
            # The user's plan is drawn; after the user's critique comes a plan (or a Refine's plan).
            return VISION_START if is_plan else IM_START
        self._say(self._describe_image(state))
        self._say(f"  the model wants to {'stop' if proposed == IM_END else 'continue'}")
        question = (
            "enter: accept · s: stop here (this image is the answer) · r: redraw the last plan\n"
            "  or type the next step yourself: a plan <ins>…</ins><des>…</des>, or a critique "
            "[<refine>…</refine>]"
        )
        while True:
            answer = self._ask(question)
            if not answer:
                return proposed
            if answer == STOP:
                return IM_END
            if answer == REDRAW:
                plans = PLAN_PATTERN.findall(state.text)
                if plans:
                    self.queued = plans[-1]
                    return IM_START
                self._say("  not used: there is no plan to redraw yet")
                continue
            problem = _problem(answer, plan_only=False)
            if problem is None:
                self.queued = answer
                return IM_START
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
