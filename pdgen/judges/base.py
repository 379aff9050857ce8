"""The `Judge` protocol and its `Verdict`.

The paper used GPT as judge of plans (does the plan build the prompt?) and of images (does the image
follow the instruction?); pdgen's default judge is the shapes world (`pdgen.judges.world.WorldJudge`),
which is exact. A verdict's texts are what the Inspect step says: `analysis` is the critique and
`refine` the corrective instruction that goes inside `<refine>...</refine>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from pdgen.scene.plan import StepGoal


@dataclass(frozen=True)
class Verdict:
    """`ok`: no problem found; `analysis`: what was checked and what is wrong, naming the violated rule;
    `refine`: the instruction that fixes the first problem (None when ok); `problems`: each problem's
    sentence as the analysis names it, where the judge reports them one by one (the world's judges do)."""

    ok: bool
    analysis: str
    refine: str | None = None
    problems: tuple[str, ...] = ()


class Judge(Protocol):
    def check_plan(self, prompt: str, plan: Sequence[StepGoal]) -> Verdict:
        """Does the plan build what the prompt asks for?"""
        ...

    def check_image(self, image: Image.Image, instruction: StepGoal) -> Verdict:
        """Does the image show the scene the instruction leads to?"""
        ...
