import numpy as np
import pytest

from pdgen.scene.vocabulary import COLORS, SHAPE_CLASSES
from pdgen.world.config import WorldConfig
from pdgen.world.layout import Placed, WorldState
from pdgen.world.render import render
from pdgen.world.rollout import rollout
from pdgen.world.shapes import BACKGROUND, PALETTE


def test_render_is_deterministic_per_seed_and_sized():
    for size in (32, 64, 128):
        config = WorldConfig(size=size, grid=2, classes=SHAPE_CLASSES[:3])
        a = rollout("a red circle left of a blue square", 5, config)[-1].image
        b = rollout("a red circle left of a blue square", 5, config)[-1].image
        assert a.size == (size, size) and a.mode == "RGB"
        assert np.array_equal(np.asarray(a), np.asarray(b))
    prompt = "a red circle left of a blue square"
    random_order = WorldConfig(order="random")
    assert not np.array_equal(
        np.asarray(rollout(prompt, 6, random_order)[-1].image),
        np.asarray(rollout(prompt, 5, random_order)[-1].image),
    )
    # the default world's canonical order: a prompt that names every colour fixes its image, whatever the seed
    assert np.array_equal(np.asarray(rollout(prompt, 6)[-1].image), np.asarray(rollout(prompt, 5)[-1].image))


def test_render_is_anti_aliased_and_uses_the_palette():
    state = WorldState((Placed("circle", "red", "red", (0.1, 0.1, 0.6, 0.6), (0, 0)),))
    pixels = np.asarray(render(state)).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert PALETTE["red"] in colours and BACKGROUND in colours
    assert len(colours) > 2  # edge pixels blend the two


def test_config_checks_its_values():
    with pytest.raises(ValueError, match="size"):
        WorldConfig(size=16)
    with pytest.raises(ValueError, match="unknown"):
        WorldConfig(classes=("circle", "dog"))
    with pytest.raises(ValueError, match="WorldConfig.order must be one of"):
        WorldConfig(order="sorted")
    assert WorldConfig.from_name("all").classes == SHAPE_CLASSES
    assert len(PALETTE) == len(COLORS) == 10
