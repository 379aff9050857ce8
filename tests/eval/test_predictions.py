"""Reading pdgen's prediction folders: samples, trajectories, generation records and costs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pdgen.eval.predictions import cost_summary, is_prediction_folder, read_predictions
from pdgen.eval.samples import write_prompt_folder
from pdgen.inference.costs import Costs
from pdgen.trajectory import Plan, Sketch, Trajectory

RED = Image.new("RGB", (4, 4), "red")


def write_sample(root: Path, index: int, sample: int, costs: Costs | None, trajectory: bool = True) -> Path:
    steps = root / f"{index:05d}" / "trajectory" / f"{sample:04d}"
    if trajectory:
        Trajectory("a red square", [Plan("Add a red square.", "A red square."), Sketch(RED)]).save(steps)
    if costs is not None:
        steps.mkdir(parents=True, exist_ok=True)
        (steps / "costs.json").write_text(json.dumps({**costs.to_dict(), "seed": sample, "mode": "process"}))
    return steps


def test_samples_are_listed_with_their_files(tmp_path: Path) -> None:
    write_prompt_folder(tmp_path, 0, {"prompt": "a red square"}, [RED, RED])
    write_sample(tmp_path, 0, 0, Costs(images=1, sampling_steps=50))
    write_sample(tmp_path, 0, 1, None, trajectory=False)
    first, second = read_predictions(tmp_path)
    assert (first.index, first.sample, second.sample) == (0, 0, 1)
    assert first.trajectory is not None and first.costs["sampling_steps"] == 50 and first.costs["seed"] == 0
    assert len(first.drawn) == 1 and first.image.name == "0000.png"
    # Sample 1 has only its final image: no trajectory, no records.
    assert second.trajectory is None and second.costs is None and second.generation is None
    assert is_prediction_folder(tmp_path) and not is_prediction_folder(tmp_path / "00000")


def test_cost_summary_prefers_the_samples_costs_over_summary_json(tmp_path: Path) -> None:
    write_prompt_folder(tmp_path, 0, {"prompt": "a red square"}, [RED])
    assert cost_summary(tmp_path) is None
    (tmp_path / "summary.json").write_text(json.dumps({"prompts": 9, "mean_sampling_steps": 131.0}))
    assert cost_summary(tmp_path)["mean_sampling_steps"] == 131.0
    write_sample(tmp_path, 0, 0, Costs(images=2, sampling_steps=100))
    write_sample(tmp_path, 0, 1, Costs(images=1, sampling_steps=50))
    summary = cost_summary(tmp_path)
    assert summary["prompts"] == 2 and summary["mean_sampling_steps"] == 75.0 and summary["total_images"] == 3


def test_a_costs_file_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    write_prompt_folder(tmp_path, 3, {"prompt": "a red square"}, [RED])
    steps = write_sample(tmp_path, 3, 0, None)
    (steps / "costs.json").write_text("[1, 2]")
    with pytest.raises(
        ValueError, match=r"00003/trajectory/0000/costs.json: expected a JSON object, found list"
    ):
        read_predictions(tmp_path)
