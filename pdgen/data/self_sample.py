"""Self-sampled conflicts (the paper's method): a checkpoint's own trajectories judged step by step.

A checkpoint trained on the multi-turn subset generates a trajectory for a train prompt
(``pdgen.inference.generate``); its first step that conflicts with the prompt is the flawed step (a
negative), or, when none does, one of its steps is a positive. The sample is then finished as a symbolic
one is (``pdgen.data.conflict_sample.finish_sample``), so the two variants differ only in where the errors
come from (the paper's point: self-sampled errors are the model's own).

- ``goal_between`` replays a model's plan step in the world (one added instance, or the background);
- ``completion`` finds the planner's remaining steps from the scene the inspected step (or its fix) reached;
- ``SelfSampler`` turns one generation into a sample, counting what became of every generation;
- ``checkpoint_plans`` is the one place the data side loads a trained module: it imports ``pdgen.lit`` and
  ``pdgen.inference`` when called, and nothing in ``pdgen.lit`` or ``pdgen.inference`` imports this module.

A self-sampled trajectory contributes its *texts*: its images are the world's renders of its plans (its
pixels are not read back: whether an image follows its instruction is the alignment subset's question).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pdgen.data.conflict_sample import ConflictSample, finish_sample
from pdgen.data.subset_build import SampleSkipped
from pdgen.editors.world import WorldEditor
from pdgen.judges.step import StepJudge, WorldStepJudge
from pdgen.scene.describe import read_scene
from pdgen.scene.graph import SceneGraph
from pdgen.scene.parser import parse
from pdgen.scene.plan import StepGoal, plan
from pdgen.trajectory import Plan, Sketch
from pdgen.world.config import WorldConfig

if TYPE_CHECKING:  # the inference package imports torch and the model; only checkpoint_plans needs it
    from pdgen.inference.control import Controller

log = logging.getLogger(__name__)


def goal_between(before: SceneGraph, after: SceneGraph, ins: str, des: str) -> StepGoal | None:
    """The world goal that turns scene ``before`` into ``after`` when that is one added instance (or the
    background); None otherwise. This is how a model's plan step is replayed in the world."""
    if not after.objects and not before.objects:
        return StepGoal("background", ins, des, after)
    have, want = before.counts(), after.counts()
    grown = [key for key, n in want.items() if n == have.get(key, 0) + 1]
    same = all(want.get(key, 0) == n for key, n in have.items() if key not in grown)
    if len(grown) != 1 or not same or len(want) - len(have) > 1:
        return None
    if not before.relation_triples() <= after.relation_triples():
        return None
    i = after.index(grown[0])
    target = replace(after.objects[i], count=1)
    relations = tuple((r.predicate, after.objects[r.object]) for r in after.relations if r.subject == i)
    return StepGoal("add", ins, des, after, target, None, relations)


def completion(
    prompt_graph: SceneGraph,
    scene: SceneGraph,
    rng: np.random.Generator,
    classes: Sequence[str],
    attempts: int = 32,
) -> list[StepGoal] | None:
    """The planner's remaining steps after a scene equal to ``scene``, from the first of ``attempts`` plans of
    the prompt that passes through it; None when none does."""
    for _ in range(attempts):
        goals = plan(prompt_graph, rng, classes=classes)
        for i, goal in enumerate(goals):
            if goal.graph.same_as(scene):
                return goals[i + 1 :]
    return None


@dataclass
class SelfSampler:
    """A checkpoint's trajectories turned into conflict samples.

    Args:
        generate_plans: ``(prompt, seed) -> [(ins, des), ...]``: the plan steps of one generation, in order
            (``checkpoint_plans`` makes one from a checkpoint and ``pdgen.inference.generate``).
        world: the shapes world that renders the steps.
        judge: judges each step against the prompt.
        positive_fraction: probability that a generation whose steps are all consistent gives a positive
            (the others are dropped, counted as ``consistent_dropped``, to keep the paper's balance).
        inspect_last: whether a conflict in the generation's last step gives a negative (else it is dropped,
            counted as ``last_step``): a positive never inspects the last step (``symbolic_sample``).
    """

    generate_plans: Callable[[str, int], list[tuple[str, str]] | None]
    world: WorldConfig
    judge: StepJudge = field(default_factory=WorldStepJudge)
    positive_fraction: float = 1.0
    inspect_last: bool = False
    outcomes: Counter = field(default_factory=Counter, init=False)
    """Generations by what became of them: ``positive``, ``negative`` or why none was made."""

    def sample(self, prompt: str, seed: int) -> ConflictSample | None:
        """The sample from one generation for ``prompt``, or None (the reason counted in ``outcomes``)."""
        try:
            result = self._sample(prompt, seed)
        except SampleSkipped as error:
            self.outcomes[error.outcome] += 1
            log.debug("no conflict sample from %r (seed %d): %s", prompt, seed, error)
            return None
        self.outcomes[result.label] += 1
        return result

    def _sample(self, prompt: str, seed: int) -> ConflictSample:
        rng = np.random.default_rng(seed)
        graph = parse(prompt)
        steps = self.generate_plans(prompt, int(rng.integers(1 << 62)))
        if not steps:
            raise SampleSkipped("invalid_trajectory", "the generation is not a trajectory with plans")
        goals: list[StepGoal] = []
        scene = SceneGraph()
        for ins, des in steps:
            try:
                after = read_scene(des)
            except ValueError as error:
                raise SampleSkipped("unreadable_plan", f"step {len(goals)}: {error}") from error
            goal = goal_between(scene, after, ins, des) if goals or not after.objects else None
            if goal is None:
                raise SampleSkipped(
                    "unrealizable_step", f"step {len(goals)} {ins!r} is not one added instance"
                )
            if not self.judge.check_step(graph, goal).verdict.ok:
                if len(goals) == len(steps) - 1 and not self.inspect_last:
                    raise SampleSkipped("last_step", f"the conflict is in the last step, {ins!r}")
                return self._finish(prompt, graph, goals, goal, rng)
            goals.append(goal)
            scene = after
        inspectable = range(1, len(goals) - 1)  # not the background; not the last (see symbolic_sample)
        if not inspectable or rng.random() >= self.positive_fraction:
            raise SampleSkipped("consistent_dropped", "every step is consistent and no positive was drawn")
        k = int(rng.integers(inspectable.start, inspectable.stop))
        return self._finish(prompt, graph, goals[:k], goals[k], rng)

    def _finish(
        self, prompt: str, graph: SceneGraph, before: list[StepGoal], step: StepGoal, rng: np.random.Generator
    ) -> ConflictSample:
        """The sample inspecting ``step`` after ``before``, completed by the planner from the right scene."""
        checked = self.judge.check_step(graph, step)
        reached = step.graph if checked.verdict.ok else (checked.fix.graph if checked.fix else None)
        if reached is None:
            raise SampleSkipped("no_fix", f"{checked.kind} conflict without a one-instance fix: {step.ins}")
        rest = completion(graph, reached, rng, self.world.classes)
        if rest is None:
            raise SampleSkipped(
                "no_completion", f"no plan of the prompt passes through {reached.describe()!r}"
            )
        editor = WorldEditor(self.world, int(rng.integers(1 << 62)))
        return finish_sample(prompt, graph, before, step, reached, rest, self.judge, editor)


def checkpoint_plans(
    checkpoint: str | os.PathLike[str],
    tokenizer: str | os.PathLike[str],
    packing: str = "tiny",
    generation: str = "tiny",
    controller: Callable[[str], Controller] | None = None,
    **overrides: Any,
) -> Callable[[str, int], list[tuple[str, str]] | None]:
    """``(prompt, seed) -> plan steps`` of a checkpoint's generations, for ``SelfSampler``.

    Loads ``ProcessDrivenModule.load_from_checkpoint`` on the CPU (or the GPU when there is one) with its EMA
    average when the checkpoint holds one (the weights ``pdgen predict`` samples with), the tokenizer the
    checkpoint was trained with (a multi-turn build's ``tokenizer/``) and the packing preset it was trained
    with, its geometry set from the trunk as training does (``PackingConfig.for_trunk``).

    Args:
        checkpoint: a Lightning checkpoint of ``ProcessDrivenModule`` (stage 1: multi-turn only).
        tokenizer: the tokenizer directory.
        packing: the ``PackingConfig`` preset of training.
        generation: the ``GenerationConfig`` preset; ``overrides`` change its fields (``num_timesteps``).
        controller: ``prompt -> Controller`` for each generation (tests script plans with it); None lets the
            model do everything.
    """
    import torch

    from pdgen.data.packing_config import PackingConfig
    from pdgen.data.tokenizer import load_tokenizer
    from pdgen.inference import GenerationConfig, generate
    from pdgen.lit.module import ProcessDrivenModule

    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = ProcessDrivenModule.load_for_sampling(checkpoint, map_location=device)
    trunk = module.trunk
    words = load_tokenizer(tokenizer)
    layout = PackingConfig.from_name(packing).for_trunk(trunk.config)
    if "image_size" not in overrides:  # the preset's size, within what the trunk draws (32 px, embedded)
        side = min(max(GenerationConfig.from_name(generation).image_size), layout.vae_max_size)
        overrides["image_size"] = (max(side, layout.vae_min_size),) * 2
    config = GenerationConfig.from_name(generation, **overrides)

    def plans(prompt: str, seed: int) -> list[tuple[str, str]] | None:
        scripted = controller(prompt) if controller is not None else None
        result = generate(trunk, words, prompt, config, seed, layout, controller=scripted)
        if result.trajectory is None:
            return None
        steps = []
        for step in result.trajectory.steps:
            if isinstance(step, Plan):
                steps.append((step.ins, step.des))
            elif not isinstance(step, Sketch):
                break  # the model's own inspections: only the plan before the first one is judged
        return steps

    return plans
