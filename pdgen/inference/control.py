"""Controllers: who takes the loop's decisions and writes its texts, when it should not be the model alone.

The loop has three kinds of choice points:

- a *decision*: the control token after a text segment (``<|vision_start|>`` = draw, ``<|im_start|>`` =
  another text) or after an image (``<|im_start|>`` = continue, ``<|im_end|>`` = stop). The model proposes
  one from its logits; a controller may replace it;
- a *text segment* about to start: a controller may supply its body (an external planner's plan, an
  external inspector's critique, a user's edit); otherwise the model writes it token by token;
- a *text segment the model has just written*, before the decision after it: a `Reviewer` (a controller
  with a `review` method) may keep it or replace it. A replaced segment is taken back out of the context
  and the replacement written as forced text, so the rest of the run is exactly the run in which the
  replacement had been dictated from the start (``write``), same seed, same images.

`Controller` is that protocol, every method seeing a `LoopState`. `Reviewer` is optional: the loop asks
for reviews, and keeps what it needs to take a segment back, only when the controller has one (a person
at a terminal, ``pdgen.inference.interactive``). `ModelDecides` leaves everything to the model; `Script`
forces a fixed sequence (tests, and the training-free baselines of the paper's Table 4, which issue 6
builds on this hook: a judge as planner returns plans from `write`, a judge as inspector returns one
critique and the refine decision).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from PIL import Image


@dataclass(frozen=True)
class LoopState:
    """What the loop has produced when a controller is asked.

    Attributes:
        prompt: the user's prompt.
        text: the steps emitted so far as tagged text (plans, critiques and
            ``<|vision_start|><|image_pad|><|vision_end|>`` per image), as `Trajectory.to_text` writes them.
        images: the images drawn so far, in order.
        after: what the decision follows: ``"text"`` (a finished text segment) or ``"image"``; for `write`
            and `Reviewer.review`, what the segment follows: ``"prompt"``, ``"text"`` or ``"image"``.
    """

    prompt: str
    text: str
    images: tuple[Image.Image, ...]
    after: Literal["prompt", "text", "image"]


class Controller(Protocol):
    """Takes over decisions or texts of the loop; return the model's proposal / None to leave it be."""

    def decide(self, state: LoopState, options: tuple[str, ...], proposed: str) -> str:
        """The control token to take, one of `options`; `proposed` is the model's choice."""
        ...

    def write(self, state: LoopState) -> str | None:
        """The body of the text segment about to start (no control tokens), or None: the model writes it."""
        ...


@runtime_checkable
class Reviewer(Controller, Protocol):
    """A controller that also reviews every text the model writes, before the loop goes on."""

    def review(self, state: LoopState, text: str) -> str | None:
        """None keeps `text` (the segment's body, as the model wrote it); a string replaces it (a body, no
        control tokens). `state` is as for the `write` that let the model write it."""
        ...


class ModelDecides:
    """The default controller: the model takes every decision and writes every text."""

    def decide(self, state: LoopState, options: tuple[str, ...], proposed: str) -> str:
        return proposed

    def write(self, state: LoopState) -> str | None:
        return None


@dataclass
class Script:
    """Forces decisions and texts in order; a None entry, or a used-up list, lets the model choose.

        Script(decisions=[VISION_START, IM_END], texts=["<ins>Add a circle.</ins><des>A circle.</des>"])

    draws after a forced plan, then stops: the smallest valid trajectory, from any model.

    Args:
        decisions: one entry per decision point, in the order the loop meets them.
        texts: one entry per text segment, in order.
    """

    decisions: Sequence[str | None] = ()
    texts: Sequence[str | None] = ()
    _decided: int = field(default=0, init=False)
    _written: int = field(default=0, init=False)

    def decide(self, state: LoopState, options: tuple[str, ...], proposed: str) -> str:
        forced = self.decisions[self._decided] if self._decided < len(self.decisions) else None
        self._decided += 1
        return proposed if forced is None else forced

    def write(self, state: LoopState) -> str | None:
        forced = self.texts[self._written] if self._written < len(self.texts) else None
        self._written += 1
        return forced
