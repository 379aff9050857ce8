"""A small prediction folder shared by the eval and view command tests: the world's own renders of
ShapesEval's test split (one prompt per tag, one sample each), with made-up costs as `pdgen predict`
records them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pdgen.eval.predictions import COSTS_NAME, TRAJECTORY_DIR
from pdgen.eval.shapes import write_ground_truth
from pdgen.inference.costs import Costs
from pdgen.world.prompts import shapes_eval_prompts

COSTS = Costs(
    images=2,
    sampling_steps=100,
    forward_passes=300,
    cfg_passes=100,
    text_tokens=40,
    drafted_tokens=30,
    drafted_tokens_kept=12,
    wall_time_s=1.5,
)


@pytest.fixture(scope="session")
def _rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predictions") / "truth"
    write_ground_truth(root, shapes_eval_prompts("test", per_tag=1), samples=1)
    for trajectory in root.glob(f"*/{TRAJECTORY_DIR}/*"):
        costs = {**COSTS.to_dict(), "seed": 0, "mode": "process"}
        (trajectory / COSTS_NAME).write_text(json.dumps(costs))
    return root


@pytest.fixture
def predictions(_rendered: Path, tmp_path: Path) -> Path:
    """A fresh copy of the rendered folder (6 prompts, 1 sample each, trajectories and costs)."""
    return Path(shutil.copytree(_rendered, tmp_path / "predictions"))
