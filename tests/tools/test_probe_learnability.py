"""tools/probe_learnability.py: the square world it trains on, and the reading ratio it reports."""


import pytest
import torch
from toolkit import imported_tool

from pdgen.world.shapes import BACKGROUND, PALETTE


@pytest.fixture(scope="module")
def probe():
    yield from imported_tool("probe_learnability")


def test_a_square_is_drawn_in_its_cell_in_the_colour_the_plan_names(probe):
    world = probe.SquareWorld(side=0.2, cells=9, name_cells=True)
    trajectory = world.trajectory("red", 2)  # row 0, column 2
    plan, sketch = trajectory.steps
    assert plan.ins == "Add a red square."
    assert plan.des == "The scene shows a red square at the top right."
    image = sketch.image
    assert image.size == (32, 32)
    assert image.getpixel((26, 5)) == PALETTE["red"]  # the top-right cell's centre
    assert image.getpixel((5, 5)) == image.getpixel((16, 16)) == BACKGROUND


def test_a_centred_square_is_not_named(probe):
    plan, sketch = probe.SquareWorld(side=0.5, cells=1, name_cells=False).trajectory("blue", 0).steps
    assert plan.des == "The scene shows a blue square."
    assert sketch.image.getpixel((16, 16)) == PALETTE["blue"]


@pytest.mark.parametrize(
    ("cells", "name_cells", "message"), [(5, False, "must be 1, 4 or 9"), (1, True, "needs --cells 4 or 9")]
)
def test_bad_geometry_is_refused(probe, cells, name_cells, message):
    with pytest.raises(ValueError, match=message):
        probe.SquareWorld(0.2, cells, name_cells)


def test_the_reading_ratio_is_zero_for_a_velocity_blind_to_the_text_and_positive_for_one_that_is_not(probe):
    from pdgen.data.packing import PackingConfig, TrajectoryPacker
    from pdgen.data.tokenizer import train_tokenizer

    torch.set_num_threads(1)
    world = probe.SquareWorld(side=0.5, cells=1, name_cells=False)
    tokenizer = train_tokenizer(world.corpus() * 3, vocab_size=512)
    module = probe.fresh_module(tokenizer.convert_tokens_to_ids("<|vision_start|>"), 1.0, 1.0, seed=0)
    packer = TrajectoryPacker(tokenizer, PackingConfig.from_name("tiny").for_trunk(module.trunk.config))
    pairs = [(world.trajectory("red", 0), world.trajectory("blue", 0))]
    assert probe.reading_ratio(module, packer, pairs) == 0.0  # llm2vae starts at zero: no velocity at all

    # A random velocity head reads the hidden states, which see the text: the ratio moves off zero.
    with torch.no_grad():
        module.trunk.llm2vae.weight.normal_(std=0.5)
    assert probe.reading_ratio(module, packer, pairs) > 0.0


@pytest.mark.parametrize(
    ("cells", "name_cells", "ceiling"), [(1, False, 1.0), (4, False, 0.5), (9, False, 1 / 3), (9, True, 1.0)]
)
def test_the_colour_ceiling_is_one_over_the_root_of_the_cells_the_text_leaves_open(
    probe, cells, name_cells, ceiling
):
    assert probe.colour_ceiling(cells, name_cells) == pytest.approx(ceiling)
