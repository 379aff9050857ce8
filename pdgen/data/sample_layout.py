"""How a stored trajectory becomes a training sample: the process, one pass, or a caption pair.

The shards hold trajectories (``pdgen.trajectory``); what the model is trained on is a choice of the recipe,
made per sample by a *layout* with the reader's own seeded coins (so a resumed stream replays them):

- ``ProcessLayout``: the paper's interleaved sequence (``TrajectoryPacker.sample``), with condition dropout
  for classifier-free guidance: the prompt alone (``prompt_dropout``), or every text (``text_dropout``: the
  prompt and the plans and inspections, so that the loop can guide with the images alone, as BAGEL's think
  mode does); and, with probability ``plan_text``, a trajectory that inspects nothing laid out as its text
  alone (the prompt and its plans, images left out): the planner's lesson at about a quarter of the tokens;
- ``SinglePassLayout``: the prompt, then the trajectory's final image and nothing else: what a model that
  draws in one pass is trained on (the paper's baseline, ``configs/ablations/single_pass.yaml``);
- ``CaptionLayout``: the base stage's pairs (a trajectory of one caption and one image): caption -> image
  (text-to-image) or, with probability ``image_to_text``, image -> caption (the understanding path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from PIL import Image

from pdgen.data.packing import PackedSample, TrajectoryPacker
from pdgen.trajectory import Inspect, Refine, Sketch, Trajectory

LayoutName = Literal["process", "single_pass", "caption"]


class Layout(Protocol):
    def __call__(
        self, packer: TrajectoryPacker, trajectory: Trajectory, where: str, coins: np.random.Generator
    ) -> PackedSample:
        """The sample to train on; ``coins`` is the reader's generator (draw the same count every call)."""
        ...


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a probability in [0, 1], got {value}")
    return value


@dataclass(frozen=True)
class ProcessLayout:
    """The interleaved trajectory; a sample loses its prompt, or every text, with the given probabilities.

    ``plan_text`` is the probability that a trajectory without inspections (a multi-turn one) keeps its text
    and loses its images (``TrajectoryPacker.sample(drop_images=True)``). A plan's content words are a few
    tokens of a sample that is mostly image tokens, so the planner sees few of them per step; its text alone
    costs a quarter of the tokens. Inspections judge images, so trajectories with one always keep theirs.
    """

    prompt_dropout: float = 0.0
    text_dropout: float = 0.0
    plan_text: float = 0.0

    def __post_init__(self) -> None:
        _probability("prompt_dropout", self.prompt_dropout)
        _probability("text_dropout", self.text_dropout)
        _probability("plan_text", self.plan_text)
        if self.prompt_dropout + self.text_dropout > 1.0:
            raise ValueError(
                f"prompt_dropout + text_dropout = {self.prompt_dropout + self.text_dropout} exceeds 1"
            )

    def __call__(
        self, packer: TrajectoryPacker, trajectory: Trajectory, where: str, coins: np.random.Generator
    ) -> PackedSample:
        coin = coins.random()
        drop_text = coin < self.text_dropout
        drop_prompt = not drop_text and coin < self.text_dropout + self.prompt_dropout
        # A second coin only where plan_text is on, so that the streams of other recipes stay as they were.
        text_coin = coins.random() if self.plan_text else 1.0
        inspects = any(isinstance(step, Inspect) for step in trajectory.steps)
        drop_images = not (drop_text or inspects) and text_coin < self.plan_text
        return packer.sample(
            trajectory, where, drop_prompt=drop_prompt, drop_text=drop_text, drop_images=drop_images
        )


@dataclass(frozen=True)
class SinglePassLayout:
    """The prompt and the final image of the trajectory (a text-to-image sample); the prompt is dropped with
    probability ``prompt_dropout``."""

    prompt_dropout: float = 0.0

    def __post_init__(self) -> None:
        _probability("prompt_dropout", self.prompt_dropout)

    def __call__(
        self, packer: TrajectoryPacker, trajectory: Trajectory, where: str, coins: np.random.Generator
    ) -> PackedSample:
        drop = coins.random() < self.prompt_dropout
        return packer.text_to_image(trajectory.prompt, final_image(trajectory, where), where, drop)


@dataclass(frozen=True)
class CaptionLayout:
    """A base-stage pair (the trajectory's prompt is the caption, its one image the picture): text-to-image,
    or image-to-text with probability ``image_to_text``; a text-to-image caption is dropped with probability
    ``caption_dropout`` (text CFG's unconditional context)."""

    caption_dropout: float = 0.0
    image_to_text: float = 0.0

    def __post_init__(self) -> None:
        _probability("caption_dropout", self.caption_dropout)
        _probability("image_to_text", self.image_to_text)

    def __call__(
        self, packer: TrajectoryPacker, trajectory: Trajectory, where: str, coins: np.random.Generator
    ) -> PackedSample:
        coin = coins.random()
        image = final_image(trajectory, where)
        if coin < self.image_to_text:
            return packer.image_to_text(image, trajectory.prompt, where)
        drop = coin < self.image_to_text + (1.0 - self.image_to_text) * self.caption_dropout
        return packer.text_to_image(trajectory.prompt, image, where, drop)


def final_image(trajectory: Trajectory, where: str = "trajectory") -> Image.Image:
    """The last image the trajectory draws: its answer."""
    images = [step.image for step in trajectory.steps if isinstance(step, Sketch | Refine)]
    if not images:
        raise ValueError(f"{where}: the trajectory draws no image, so it has no final image to train on")
    return images[-1]


def make_layout(
    name: LayoutName,
    prompt_dropout: float = 0.0,
    text_dropout: float = 0.0,
    image_to_text: float = 0.0,
    plan_text: float = 0.0,
) -> Layout:
    """The layout called ``name``, with its dropout; ``prompt_dropout`` is the caption's for ``caption``."""
    if image_to_text and name != "caption":
        raise ValueError(f"image_to_text={image_to_text} needs layout='caption', not {name!r}")
    if name == "process":
        return ProcessLayout(prompt_dropout, text_dropout, plan_text)
    if text_dropout or plan_text:
        raise ValueError(
            f"text_dropout={text_dropout} and plan_text={plan_text} need layout='process'; "
            f"{name!r} has one text"
        )
    if name == "single_pass":
        return SinglePassLayout(prompt_dropout)
    if name == "caption":
        return CaptionLayout(prompt_dropout, image_to_text)
    raise ValueError(f"unknown layout {name!r}; layouts are process, single_pass, caption")
