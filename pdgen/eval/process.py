"""The process, scored: did the plans build what the prompt asks, and were the inspections right?

ShapesEval scores the final image; this scores the steps that led to it, from the trajectories `pdgen predict`
saves beside the images (`pdgen.eval.predictions`), with the shapes world as the referee:

- **complete plans**: the scene the last plan describes (its ``<des>``, read back by the world's parser) has
  every object, colour, count and relation the prompt asks for, and nothing it rules out;
- **planned right**: complete, and no plan after the first complete one changes the scene: the model added the
  prompt's objects and stopped after the last (a Refine that redraws the finished scene, after an inspection
  of its image, does not count against it; a plan that adds or removes something does);
- **inspections**: every Inspect the model chose to make, against the world's verdict on the same step: the
  step is wrong when its plan conflicts with the prompt (`WorldStepJudge`) or its image does not show its
  plan (`WorldJudge.check_image`). An inspection *agrees* when it writes a ``<refine>`` exactly when the step
  is wrong;
- **images per prompt**, and how many trajectories could not be read (a plan whose ``<des>`` is not a scene
  description, or no trajectory at all: single-pass samples, invalid outputs).

Plans are scored over *every* trajectory of a process folder: one that cannot be read did not plan the
prompt's scene (the model wrote, say, "a circle and a circle" where the world says "two circles"), so it
counts as neither complete nor planned right. Leaving it out would score a planner by its best outputs.

Every rate comes with its count and a Wilson 95 % interval, because prediction runs on a CPU are small. The
samples of one prompt are not independent: text is greedy by default, so they share their plans until their
images differ. So planned right is also given **by prompt** (a prompt counts when every sample of it is
planned right; n is the number of prompts, the honest size for the interval), and every figure **by tag**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pdgen.eval.predictions import read_predictions
from pdgen.scene.graph import SceneGraph
from pdgen.scene.plan import StepGoal
from pdgen.scene.vocabulary import TAGS
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory
from pdgen.world.config import DEFAULT_WORLD, WorldConfig


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate (95 % by default); (0, 1) when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Rate:
    """A count of successes out of ``n``, reported with its Wilson 95 % interval."""

    successes: int = 0
    n: int = 0

    def add(self, success: bool) -> None:
        self.successes += int(success)
        self.n += 1

    def to_dict(self) -> dict[str, Any]:
        low, high = wilson_interval(self.successes, self.n)
        rate = self.successes / self.n if self.n else None
        return {"rate": rate, "successes": self.successes, "n": self.n, "interval_95": [low, high]}


@dataclass
class TagProcess:
    """The process figures of one ShapesEval tag."""

    planned_right: Rate = field(default_factory=Rate)
    inspections_agree: Rate = field(default_factory=Rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "planned_right": self.planned_right.to_dict(),
            "inspections_agree": self.inspections_agree.to_dict(),
        }


@dataclass
class ProcessReport:
    """What `score_process` measured over a prediction folder (see the module docstring)."""

    trajectories: int = 0
    unreadable: int = 0
    complete: Rate = field(default_factory=Rate)
    planned_right: Rate = field(default_factory=Rate)
    prompts_planned_right: Rate = field(default_factory=Rate)
    inspections_agree: Rate = field(default_factory=Rate)
    inspections_per_trajectory: float = 0.0
    images_per_trajectory: float = 0.0
    by_tag: dict[str, TagProcess] = field(default_factory=dict)

    def tag(self, name: str) -> TagProcess:
        """The figures of tag ``name`` (created empty when first asked for)."""
        return self.by_tag.setdefault(name, TagProcess())

    def to_dict(self) -> dict[str, Any]:
        return {
            "trajectories": self.trajectories,
            "unreadable": self.unreadable,
            "complete_plans": self.complete.to_dict(),
            "planned_right": self.planned_right.to_dict(),
            "prompts_planned_right": self.prompts_planned_right.to_dict(),
            "inspections_agree": self.inspections_agree.to_dict(),
            "inspections_per_trajectory": self.inspections_per_trajectory,
            "images_per_trajectory": self.images_per_trajectory,
            "by_tag": {name: self.by_tag[name].to_dict() for name in sorted(self.by_tag, key=_tag_order)},
        }


@dataclass(frozen=True)
class _Planned:
    """One sample's plans: complete and planned right (neither, where it has no readable plans)."""

    tag: str
    prompt: int
    complete: bool = False
    right: bool = False
    has_trajectory: bool = True


def score_process(root: str | Path, config: WorldConfig = DEFAULT_WORLD) -> ProcessReport:
    """Score the trajectories of a `pdgen predict` folder whose prompts are GenEval metadata rows."""
    from pdgen.judges.step import WorldStepJudge
    from pdgen.judges.world import WorldJudge

    report = ProcessReport()
    judge, step_judge = WorldJudge(config), WorldStepJudge()
    inspections = images = without_trajectory = 0
    planned: list[_Planned] = []
    for prediction in read_predictions(root):
        row = prediction.folder.metadata
        if "include" not in row:
            continue
        tag = row.get("tag", "untagged")
        report.trajectories += 1
        if prediction.trajectory is None:
            report.unreadable += 1
            without_trajectory += 1
            planned.append(_Planned(tag, prediction.index, has_trajectory=False))
            continue
        trajectory = Trajectory.load(prediction.trajectory)
        prompt = SceneGraph.from_geneval(row["include"], row.get("exclude", ()))
        scenes = _planned_scenes(trajectory)
        if scenes is None:
            report.unreadable += 1
            planned.append(_Planned(tag, prediction.index))
            continue
        images += sum(isinstance(step, Sketch | Refine) for step in trajectory.steps)
        complete = [_is_complete(prompt, scene, judge) for scene in scenes]
        done = complete.index(True) if complete[-1] else None
        right = done is not None and all(s.same_as(scenes[done]) for s in scenes[done:])
        planned.append(_Planned(tag, prediction.index, complete[-1], right))
        for image, plan, inspect in _inspected_steps(trajectory):
            inspections += 1
            goal = StepGoal("add", plan.ins, plan.des, _read(plan.des))
            wrong = (
                not step_judge.check_step(prompt, goal).verdict.ok or not judge.check_image(image, goal).ok
            )
            agree = (inspect.refine is not None) == wrong
            report.inspections_agree.add(agree)
            report.tag(tag).inspections_agree.add(agree)
    # In a process folder an output that is no trajectory failed to plan too; a single-pass folder has none.
    process_folder = without_trajectory < report.trajectories
    prompts_right: dict[int, bool] = {}
    for p in planned:
        if not (p.has_trajectory or process_folder):
            continue
        report.complete.add(p.complete)
        report.planned_right.add(p.right)
        report.tag(p.tag).planned_right.add(p.right)
        prompts_right[p.prompt] = prompts_right.get(p.prompt, True) and p.right
    for right in prompts_right.values():
        report.prompts_planned_right.add(right)
    readable = report.trajectories - report.unreadable
    report.inspections_per_trajectory = inspections / readable if readable else 0.0
    report.images_per_trajectory = images / readable if readable else 0.0
    return report


def _tag_order(tag: str) -> tuple[int, str]:
    """GenEval's tags in GenEval's order, then any other tag by name."""
    return (TAGS.index(tag), "") if tag in TAGS else (len(TAGS), tag)


def _read(des: str) -> SceneGraph:
    from pdgen.scene.describe import read_scene

    return read_scene(des)


def _planned_scenes(trajectory: Trajectory) -> list[SceneGraph] | None:
    """The scene each plan (a Plan or a Refine's plan) describes, in order; None when one is unreadable."""
    plans = [
        step if isinstance(step, Plan) else step.plan
        for step in trajectory.steps
        if isinstance(step, Plan | Refine)
    ]
    try:
        return [_read(plan.des) for plan in plans] or None
    except ValueError:
        return None


def _is_complete(prompt: SceneGraph, scene: SceneGraph, judge: Any) -> bool:
    return judge.check_plan(prompt, [StepGoal("add", "", "", scene)]).ok


def _inspected_steps(trajectory: Trajectory) -> list[tuple[Image.Image, Plan, Inspect]]:
    """(image, the plan it drew, the Inspect of it) for every inspection of the trajectory."""
    out, plan, image = [], None, None
    for step in trajectory.steps:
        if isinstance(step, Plan):
            plan = step
        elif isinstance(step, Refine):
            plan, image = step.plan, step.image
        elif isinstance(step, Sketch):
            image = step.image
        elif isinstance(step, Inspect) and plan is not None and image is not None:
            out.append((image, plan, step))
    return out
