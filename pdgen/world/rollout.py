"""`rollout`: prompt (or graph) + seed -> the list of world steps (StepGoal, state, image).

This is what builds training trajectories: plan the graph (`pdgen.scene.plan`), apply each step with the
world editor, render each state. A layout can dead-end (every cell that satisfies a relation already
taken, or every cell, in a 2x2 grid); the rollout then re-plans with the same generator, and a world that
places objects in reading order (``WorldConfig.order``) starts reading one cell later; a layout that no
starting cell finds (the reference of a relation with several instances: "a square left of two circles"
needs both circles in one column) falls back to random cells. So the result is still a function of the
seed, and the rollout counts each dead end by the operation that hit it (``dead_ends``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pdgen.editors.world import WorldEditor
from pdgen.errors import UserError
from pdgen.io import write_atomic
from pdgen.scene.graph import SceneGraph
from pdgen.scene.parser import parse
from pdgen.scene.plan import StepGoal, plan
from pdgen.trajectory import Plan, Sketch
from pdgen.world.config import DEFAULT_WORLD, WorldConfig
from pdgen.world.layout import LayoutError, WorldState
from pdgen.world.places import with_places
from pdgen.world.render import render


@dataclass(frozen=True)
class WorldStep:
    """One state of a rollout: the goal that produced it, the placed objects, the rendered image."""

    goal: StepGoal
    state: WorldState
    image: Image.Image


def trajectory_steps(steps: Sequence[WorldStep]) -> list[Plan | Sketch]:
    """A rollout as a trajectory's steps: each world step's plan (``ins``, ``des``), then its render."""
    return [part for step in steps for part in (Plan(step.goal.ins, step.goal.des), Sketch(step.image))]


def rollout(
    prompt: str | SceneGraph,
    seed: int,
    config: WorldConfig = DEFAULT_WORLD,
    augment: float = 0.0,
    attempts: int = 20,
    dead_ends: Counter[str] | None = None,
) -> list[WorldStep]:
    """Plan and build `prompt` in the world, one rendered image per step.

    Args:
        prompt: a prompt (parsed with the default parser) or a scene graph.
        seed: determines the plan order, augmentation, layout and free colours.
        config: the world.
        augment: the planner's augmentation probability.
        attempts: re-plans allowed when a layout dead-ends.
        dead_ends: a counter to add each re-plan to, by the operation that dead-ended ("add", "move").

    Raises:
        ValueError: for a graph whose classes are not in the world, or that has no layout in `attempts`.
    """
    graph = parse(prompt) if isinstance(prompt, str) else prompt
    missing = sorted({o.name for o in graph.objects} - set(config.classes))
    if missing:
        raise UserError(
            f"{graph.describe()!r} names {missing}, which are not in the world's classes {config.classes}"
        )
    rng = np.random.default_rng(seed)
    editor = WorldEditor(config, rng)
    for attempt in range(attempts):
        goals = plan(graph, rng, augment, config.classes, shuffle=config.shuffles)
        if editor.first_cell is not None:
            editor.first_cell = attempt if attempt < config.grid**2 else None
        state, steps = WorldState(), []
        try:
            for goal in goals:
                state, before = editor.apply(state, goal), state
                if config.name_places:
                    goal = with_places(goal, before, state, config.grid)
                steps.append(WorldStep(goal, state, render(state, config)))
        except LayoutError:
            if dead_ends is not None:
                dead_ends[goal.op] += 1
            continue
        return steps
    raise UserError(
        f"no layout of {graph.describe()!r} fits a {config.grid}x{config.grid} grid in {attempts} attempts"
    )


def strip(images: list[Image.Image], gap: int = 2) -> Image.Image:
    """The images side by side on white, `gap` pixels apart: a picture of a whole rollout."""
    w, h = images[0].size
    canvas = Image.new("RGB", (len(images) * (w + gap) - gap, h), (255, 255, 255))
    for i, image in enumerate(images):
        canvas.paste(image, (i * (w + gap), 0))
    return canvas


def write_rollout(steps: list[WorldStep], folder: str | Path) -> list[Path]:
    """Save each step's image as `step_NN.png` and all of them as `strip.png`; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, step in enumerate(steps):
        paths.append(_save(step.image, folder / f"step_{i:02d}.png"))
    paths.append(_save(strip([s.image for s in steps]), folder / "strip.png"))
    return paths


def _save(image: Image.Image, path: Path) -> Path:
    write_atomic(path, lambda file: image.save(file, format="PNG"))
    return path
