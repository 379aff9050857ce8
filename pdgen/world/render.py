"""`render(state, config) -> PIL image`: the world state drawn at `config.size` pixels.

Shapes are drawn at `supersample` times the size and downsampled by area averaging (anti-aliasing),
in placement order. Rendering has no randomness of its own: the image is a function of the state, and
the state a function of the seed that built it.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from pdgen.world.config import DEFAULT_WORLD, WorldConfig
from pdgen.world.layout import WorldState
from pdgen.world.shapes import BACKGROUND, PALETTE, draw_shape


def render(state: WorldState, config: WorldConfig = DEFAULT_WORLD) -> Image.Image:
    """The RGB image of `state`."""
    big = config.size * config.supersample
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for p in state.instances:
        box = tuple(v * big for v in p.box)
        draw_shape(draw, p.name, box, PALETTE[p.color], BACKGROUND)
    return image.resize((config.size, config.size), Image.Resampling.BOX)
