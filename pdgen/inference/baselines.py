"""The training-free baselines of the paper's Table 4, as controllers of the loop (`pdgen.inference.control`).

- **External planner** (the paper's "BAGEL + GPT (Planner)"): a planner back end writes every plan, the
  model only draws. `ExternalPlanner` writes plan k before image k and forces the decisions: draw after
  each plan, continue while plans remain, stop after the last image. `WorldPlanner` is the exact back
  end of the shapes world: the prompt's scene graph (`pdgen.scene.parser`) planned step by step
  (`pdgen.scene.plan`), the same plans the multi-turn training data is made of. Any object with
  ``plan(prompt, seed) -> list[Plan]`` (`Planner`) can stand in for it, e.g. a chat model.
- **External inspector** ("BAGEL + GPT (Inspector)": a single-round refinement of the model's draft
  conditioned on verbal feedback): the model plans and draws as usual; at its draft answer, the image
  after which the model proposes to stop, a `Judge` checks that image against the whole prompt. If the
  judge approves, generation stops there; otherwise its critique and ``<refine>`` instruction are
  written as the Inspect step, the model writes the corrected plan and draws it, and generation stops.
  A model that never proposes to stop is inspected at image ``max_images - 1``, so the refinement fits
  under the cap. `pdgen.judges.world.WorldJudge` is the exact back end (`prompt_goal` gives it the
  prompt's scene as the instruction to check).

Both are stateful: make one per generation (``PromptsDataModule.controller`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pdgen.inference.control import LoopState
from pdgen.judges.base import Judge
from pdgen.scene.parser import parse
from pdgen.scene.plan import StepGoal, plan
from pdgen.trajectory import (
    DES,
    DES_END,
    IM_END,
    IM_START,
    INS,
    INS_END,
    REFINE,
    REFINE_END,
    VISION_START,
    Plan,
)
from pdgen.world.config import DEFAULT_WORLD, WorldConfig


def plan_text(step: Plan) -> str:
    """A plan as the tagged text the model reads: ``<ins>…</ins><des>…</des>``."""
    return f"{INS}{step.ins}{INS_END}{DES}{step.des}{DES_END}"


class Planner(Protocol):
    def plan(self, prompt: str, seed: int) -> list[Plan]:
        """The step-by-step plans that build `prompt` (the seed picks among valid orders)."""
        ...


class WorldPlanner:
    """The shapes world's planner: the prompt parsed to a scene graph and planned step by step.

    Args:
        config: the world; its classes are the ones a prompt may name.
        augment: probability of rewriting a step into an edit that a later step corrects (0 = none).
    """

    def __init__(self, config: WorldConfig = DEFAULT_WORLD, augment: float = 0.0) -> None:
        self.config = config
        self.augment = augment

    def plan(self, prompt: str, seed: int) -> list[Plan]:
        """Plans for `prompt`, background first.

        Raises:
            ValueError: the prompt does not parse, or names a class the world does not have.
        """
        graph = parse(prompt)
        missing = sorted({o.name for o in graph.objects} - set(self.config.classes))
        if missing:
            raise ValueError(
                f"the world planner cannot plan {prompt!r}: it names {missing}, not in the world's classes "
                f"{self.config.classes}"
            )
        goals = plan(graph, seed, self.augment, self.config.classes, shuffle=self.config.shuffles)
        return [Plan(goal.ins, goal.des) for goal in goals]


class ExternalPlanner:
    """Writes the given plans one per image and forces draw / continue / stop; the model only draws.

    Args:
        plans: the plans in order (a `Planner`'s output); the last image drawn is the answer.
    """

    def __init__(self, plans: Sequence[Plan]) -> None:
        if not plans:
            raise ValueError("ExternalPlanner needs at least one plan")
        self.plans = list(plans)
        self.written = 0

    def write(self, state: LoopState) -> str | None:
        # The decisions below ask for a text only while plans remain.
        assert self.written < len(self.plans), "ExternalPlanner asked for a plan after the last one"
        self.written += 1
        return plan_text(self.plans[self.written - 1])

    def decide(self, state: LoopState, options: tuple[str, ...], proposed: str) -> str:
        if state.after == "text":
            return VISION_START
        return IM_START if self.written < len(self.plans) else IM_END


def prompt_goal(prompt: str) -> StepGoal:
    """The whole prompt as the instruction a `Judge` checks an image against (its parsed scene graph)."""
    return StepGoal("add", prompt, prompt, parse(prompt))


class ExternalInspector:
    """One round of external critique at the model's draft answer, then the model refines (module docstring).

    Args:
        judge: checks the draft against `goal` (`Judge.check_image`).
        goal: what the final image should show (`prompt_goal(prompt)`).
        max_images: the generation's image cap; the draft is inspected at ``max_images - 1`` at the latest.
    """

    def __init__(self, judge: Judge, goal: StepGoal, max_images: int) -> None:
        if max_images < 2:
            raise ValueError(
                f"ExternalInspector needs max_images >= 2 (a draft and its refinement), got {max_images}"
            )
        self.judge = judge
        self.goal = goal
        self.max_images = max_images
        self.critique: str | None = None  # set once the draft was judged wanting
        self.critique_written = False
        self.refining = False  # the text after the critique is the model's corrected plan

    def write(self, state: LoopState) -> str | None:
        if self.critique is not None and not self.critique_written:
            self.critique_written = True
            return self.critique
        return None

    def decide(self, state: LoopState, options: tuple[str, ...], proposed: str) -> str:
        if state.after == "text":
            if self.critique_written and not self.refining:
                self.refining = True  # the critique was just written: the corrected plan comes next
                return IM_START
            return VISION_START if self.refining else proposed  # the corrected plan is drawn
        if self.refining:
            return IM_END  # the refined image is the answer: one round only
        if proposed == IM_START and len(state.images) < self.max_images - 1:
            return IM_START  # not the draft yet: the model goes on with its own steps
        verdict = self.judge.check_image(state.images[-1], self.goal)
        if verdict.ok:
            return IM_END
        self.critique = verdict.analysis + (f"{REFINE}{verdict.refine}{REFINE_END}" if verdict.refine else "")
        return IM_START
