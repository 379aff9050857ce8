"""Cost counters and their summary over a prompt set."""

import json

import pytest

from pdgen.inference import Costs, summarise


def test_summary_gives_means_and_totals_per_counter():
    summary = summarise(
        [
            Costs(images=3, sampling_steps=150, forward_passes=400, text_tokens=60),
            Costs(images=1, sampling_steps=50),
        ]
    )
    assert summary["prompts"] == 2
    assert summary["mean_sampling_steps"] == 100.0 and summary["total_sampling_steps"] == 200
    assert summary["mean_images"] == 2.0 and summary["total_forward_passes"] == 400
    assert summary["mean_text_tokens"] == 30.0


def test_costs_are_saved_as_json():
    costs = Costs(images=2, sampling_steps=100, wall_time_s=1.5)
    assert json.loads(json.dumps(costs.to_dict())) == {
        "images": 2,
        "sampling_steps": 100,
        "forward_passes": 0,
        "cfg_passes": 0,
        "text_tokens": 0,
        "drafted_tokens": 0,
        "drafted_tokens_kept": 0,
        "wall_time_s": 1.5,
    }


def test_an_empty_summary_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        summarise([])
