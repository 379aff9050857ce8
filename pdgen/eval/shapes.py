"""ShapesEval: GenEval's rules engine with the shapes world's detector.

`score_shapes(DIR)` scores a GenEval-layout folder of world images (what `pdgen eval shapes --images DIR`
runs); `write_ground_truth` fills such a folder with the world's own renders of a prompt set, which must
score 1.0 on every tag (a test holds the world to that). It writes a prediction folder as `pdgen predict`
does (`pdgen.eval.predictions`), each sample's rollout as its trajectory, without costs: no model drew
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pdgen.eval.geneval import DEFAULT_OPTIONS, ScoringOptions, score_folder, summarize
from pdgen.eval.predictions import TRAJECTORY_DIR
from pdgen.eval.samples import write_prompt_folder
from pdgen.scene.graph import SceneGraph
from pdgen.trajectory import Trajectory
from pdgen.world.config import DEFAULT_WORLD, WorldConfig
from pdgen.world.detect import WorldDetector
from pdgen.world.rollout import rollout, trajectory_steps


def score_shapes(
    images: str | Path, config: WorldConfig = DEFAULT_WORLD, options: ScoringOptions = DEFAULT_OPTIONS
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """(result rows, summary) for a GenEval-layout folder of shapes-world images."""
    rows = score_folder(images, WorldDetector(config), options)
    return rows, summarize(rows)


def write_ground_truth(
    root: str | Path,
    prompts: Sequence[dict[str, Any]],
    config: WorldConfig = DEFAULT_WORLD,
    samples: int = 4,
    seed: int = 0,
) -> None:
    """Render each prompt `samples` times (seeds `seed`, `seed + 1`, ...) into GenEval's layout, with
    each rollout saved as the sample's trajectory (`00000/trajectory/0000/trajectory.json`)."""
    for index, row in enumerate(prompts):
        graph = SceneGraph.from_geneval(row["include"], row.get("exclude", ()))
        rollouts = [rollout(graph, seed + k, config) for k in range(samples)]
        folder = write_prompt_folder(root, index, row, [steps[-1].image for steps in rollouts])
        for k, steps in enumerate(rollouts):
            Trajectory(row["prompt"], trajectory_steps(steps)).save(folder / TRAJECTORY_DIR / f"{k:04d}")
