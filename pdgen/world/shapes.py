"""The shapes world's look: its palette (GenEval's ten colours) and its class silhouettes.

Every silhouette fills its box exactly (touches all four sides), so a shape's bounding box is the box
the layout gave it and GenEval's position rule can be checked on layout boxes before anything is drawn.
Silhouettes are chosen to stay distinct when small and blurred: filled blob (circle), corners (square),
one apex (triangle), spikes (star), arms (cross), rotated corners (diamond), notch + tip (heart), a
hole (ring).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import ImageDraw

from pdgen.scene.vocabulary import COLORS, SHAPE_CLASSES

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (250, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 160, 60),
    "blue": (35, 85, 225),
    "purple": (135, 50, 180),
    "pink": (250, 135, 195),
    "brown": (120, 70, 25),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
}
assert tuple(PALETTE) == COLORS

BACKGROUND: tuple[int, int, int] = (153, 153, 153)
"""GenEval's crop background grey (#999): every palette colour stands well apart from it."""


def _fit(points: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Scale a polygon so that it fills the unit box exactly."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return tuple(((x - x0) / w, (y - y0) / h) for x, y in points)


def _star(inner: float = 0.42) -> tuple[tuple[float, float], ...]:
    radii = [1.0 if k % 2 == 0 else inner for k in range(10)]
    angles = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
    return _fit([(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles, strict=True)])


def _heart() -> tuple[tuple[float, float], ...]:
    """The classic parametric heart curve, y flipped to point down."""
    ts = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    ys = [13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t) for t in ts]
    return _fit([(16 * math.sin(t) ** 3, -y) for t, y in zip(ts, ys, strict=True)])


def _cross(arm: float = 0.27) -> tuple[tuple[float, float], ...]:
    a, b = 0.5 - arm / 2, 0.5 + arm / 2
    return ((a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a))


POLYGONS: dict[str, tuple[tuple[float, float], ...]] = {
    "square": ((0, 0), (1, 0), (1, 1), (0, 1)),
    "triangle": ((0.5, 0), (1, 1), (0, 1)),
    "star": _star(),
    "cross": _cross(),
    "diamond": ((0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)),
    "heart": _heart(),
}
RING_HOLE = 0.55
"""Inner diameter of the ring as a fraction of its outer diameter."""
assert set(POLYGONS) | {"circle", "ring"} == set(SHAPE_CLASSES)


def draw_shape(
    draw: ImageDraw.ImageDraw,
    name: str,
    box: tuple[float, float, float, float],
    fill: tuple[int, ...] | int,
    hole: tuple[int, ...] | int,
) -> None:
    """Draw shape `name` filling pixel box (x1, y1, x2, y2); `hole` paints the ring's inside."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if name in ("circle", "ring"):
        draw.ellipse(box, fill=fill)
        if name == "ring":
            m = (1 - RING_HOLE) / 2
            draw.ellipse((x1 + m * w, y1 + m * h, x2 - m * w, y2 - m * h), fill=hole)
        return
    if name not in POLYGONS:
        raise ValueError(f"unknown shape {name!r}; the shapes are {SHAPE_CLASSES}")
    draw.polygon([(x1 + u * w, y1 + v * h) for u, v in POLYGONS[name]], fill=fill)
