"""Layouts: how a stored trajectory becomes the sample a recipe trains on, with its condition dropout."""

import numpy as np
import pytest
from PIL import Image

from pdgen.data.packing import PackingConfig, TextSplit, TrajectoryPacker
from pdgen.data.sample_layout import CaptionLayout, ProcessLayout, SinglePassLayout, final_image, make_layout
from pdgen.trajectory import Inspect, Plan, Sketch, Trajectory

TINY = PackingConfig.from_name("tiny")


def picture(color: str) -> Image.Image:
    return Image.new("RGB", (32, 32), color)


TWO_STEPS = Trajectory(
    "a red circle and a blue square",
    [Plan("Add a red circle.", "A red circle."), Sketch(picture("red")), Plan("Add a square.", "Both."),
     Sketch(picture("blue"))],
)  # fmt: skip


def modes(sample) -> list[str]:
    return [split.mode for split in sample.splits]


def test_the_process_layout_drops_the_prompt_or_every_text_by_its_coins(tokenizer):
    packer = TrajectoryPacker(tokenizer, TINY)
    coins = np.random.default_rng(0)
    layout = ProcessLayout(prompt_dropout=0.3, text_dropout=0.3)
    kinds = {"kept": 0, "no prompt": 0, "no text": 0}
    for _ in range(300):
        sample = layout(packer, TWO_STEPS, "t", coins)
        texts = sum(isinstance(s, TextSplit) for s in sample.splits)
        kinds[{3: "kept", 2: "no prompt", 0: "no text"}[texts]] += 1
    expected = {"kept": 0.4, "no prompt": 0.3, "no text": 0.3}
    assert all(abs(kinds[k] / 300 - p) < 0.08 for k, p in expected.items()), kinds


def test_plan_text_reads_a_trajectory_as_its_text_by_its_coin(tokenizer):
    packer = TrajectoryPacker(tokenizer, TINY)
    coins = np.random.default_rng(0)
    layout = ProcessLayout(plan_text=0.5)
    text_only = [set(modes(layout(packer, TWO_STEPS, "t", coins))) == {"causal"} for _ in range(300)]
    assert abs(np.mean(text_only) - 0.5) < 0.08


def test_plan_text_leaves_a_trajectory_that_inspects_its_images(tokenizer):
    packer = TrajectoryPacker(tokenizer, TINY)
    steps = TWO_STEPS.steps
    inspected = Trajectory(TWO_STEPS.prompt, [*steps[:2], Inspect("Right.", None), *steps[2:]])
    sample = ProcessLayout(plan_text=1.0)(packer, inspected, "t", np.random.default_rng(0))
    assert "noise" in modes(sample)


def test_single_pass_trains_the_prompt_and_the_final_image(tokenizer):
    packer = TrajectoryPacker(tokenizer, TINY)
    sample = SinglePassLayout()(packer, TWO_STEPS, "t", np.random.default_rng(0))
    assert modes(sample) == ["causal", "noise"]
    assert sample.splits[1].image is final_image(TWO_STEPS)


def test_caption_pairs_go_both_ways(tokenizer):
    packer = TrajectoryPacker(tokenizer, TINY)
    pair = Trajectory("a red circle", [Sketch(picture("red"))])
    coins = np.random.default_rng(0)
    seen = {tuple(modes(CaptionLayout(image_to_text=0.5)(packer, pair, "t", coins))) for _ in range(40)}
    assert seen == {("causal", "noise"), ("full", "causal")}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_layout("single_pass", text_dropout=0.1), "need layout='process'"),
        (lambda: make_layout("caption", plan_text=0.5), "need layout='process'"),
        (lambda: make_layout("process", image_to_text=0.1), "needs layout='caption'"),
        (lambda: make_layout("sideways"), "unknown layout"),
        (lambda: ProcessLayout(prompt_dropout=0.6, text_dropout=0.6), "exceeds 1"),
        (lambda: CaptionLayout(caption_dropout=1.5), r"caption_dropout is a probability"),
    ],
)
def test_bad_layouts_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()
