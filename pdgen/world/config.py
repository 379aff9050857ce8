"""`WorldConfig`: the knobs of the shapes world, with named presets.

The default is the world the embedded model draws at its own resolution: the embedded trunk makes 32 px
images (8x8 latent tokens of 4 px), so the default world renders at 32 px, on a 2x2 grid of cells with one
object per cell (large objects, unambiguous relations, local changes), with the three most distinct
shapes. A world rendered at 64 px and downsampled to 32 px for training cannot be drawn back well enough
to score: its own ground-truth renders, downsampled, score well under 1 on ShapesEval's colour, position
and attribute tags whichever size the detector assumes, so even a perfect model would fail them; the
default world's ground truth scores 1.0 on every tag (docs/world.md has the table).

Presets: ``default``; ``large`` (the former default: 64 px, a 3x3 grid, four shapes), for models that
draw 64 px; ``all`` (``large`` with all eight shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pdgen.errors import UserError
from pdgen.scene.vocabulary import SHAPE_CLASSES

ORDERS = ("canonical", "random")
"""How a prompt is built: the order of its objects and the cells they go to (``WorldConfig.order``)."""


@dataclass(frozen=True)
class WorldConfig:
    """Geometry and vocabulary of the shapes world.

    Args:
        size: image side in pixels (32-128).
        grid: cells per side; each object sits in its own cell.
        classes: the shape classes in use (a subset of `SHAPE_CLASSES`).
        object_scale: object side as a fraction of the cell side. The default's 0.625 makes a 10 px object
            whose edges fall on pixel boundaries (cells of 16 px): its silhouette is drawn crisp, and the
            detector reads every class of it with a score of 1.0 (0.66 gave circles 0.55).
        size_jitter: relative jitter of the object side (uniform, +-). The default world has none: see
            `position_jitter`.
        position_jitter: jitter of the object centre as a fraction of the cell's free space (+-). The default
            world has none, so a scene graph (class, colour, cell) fixes its image: with jitter the best a
            flow model can predict at high noise is the average over positions and sizes, a blob, and the
            embedded model reached a third of the colour score at equal steps (docs/results.md).
        margin: added to GenEval's 0.1 position threshold when the layout checks a relation, so that
            relations still hold on slightly different detected boxes.
        supersample: drawing resolution factor; downsampling by area averaging anti-aliases edges.
        name_places: plans name where each object goes (`pdgen.world.places`): the instruction the cell of
            what it adds or moves, the description every object's colour and cell.
        order: how a prompt is built. ``canonical``: objects are added in the prompt's order (each once its
            references exist), each in the first free cell in reading order where its relations hold (a
            layout that dead-ends starts reading one cell later, `pdgen.world.layout.place`), so a prompt
            fixes its plan and its layout, and a planner can learn them exactly. ``random``: a random order
            and any free cell where the relations hold, a richer world for models that sample; there the
            planner's best guess is the most frequent cell, which greedy decoding then writes even where it
            is taken or breaks a relation (docs/results.md).
    """

    size: int = 32
    grid: int = 2
    classes: tuple[str, ...] = SHAPE_CLASSES[:3]
    object_scale: float = 0.625
    size_jitter: float = 0.0
    position_jitter: float = 0.0
    margin: float = 0.1
    supersample: int = 4
    name_places: bool = True
    order: str = "canonical"

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 128:
            raise ValueError(f"WorldConfig.size must be in [32, 128], got {self.size}")
        if self.grid < 2:
            raise ValueError(f"WorldConfig.grid must be >= 2, got {self.grid}")
        unknown = [c for c in self.classes if c not in SHAPE_CLASSES]
        if unknown or not self.classes:
            raise ValueError(
                f"WorldConfig.classes {self.classes}: unknown {unknown}; shapes are {SHAPE_CLASSES}"
            )
        if self.order not in ORDERS:
            raise ValueError(f"WorldConfig.order must be one of {ORDERS}, got {self.order!r}")
        if not 0.3 <= self.object_scale * (1 + self.size_jitter) <= 0.85:
            raise ValueError("WorldConfig.object_scale must leave a gap between neighbouring objects")

    @property
    def shuffles(self) -> bool:
        """Whether plans add the objects that are ready in a random order (`pdgen.scene.plan.plan`'s
        ``shuffle``), not the prompt's: a ``random`` world's."""
        return self.order == "random"

    @classmethod
    def from_name(cls, name: str, **overrides) -> WorldConfig:
        """A preset by name ('default', 'large', 'all') with field overrides."""
        if name not in PRESETS:
            raise UserError(f"unknown world preset {name!r}; presets are {sorted(PRESETS)}")
        return replace(PRESETS[name], **overrides)


DEFAULT_WORLD = WorldConfig()
"""The default world, as a shared default argument."""

_JITTERED_64PX = dict(
    size=64, grid=3, object_scale=0.66, size_jitter=0.08, position_jitter=0.6, order="random"
)
"""The geometry of the former default world, kept by ``large`` and ``all``."""

PRESETS: dict[str, WorldConfig] = {
    "default": DEFAULT_WORLD,
    "large": WorldConfig(**_JITTERED_64PX, classes=SHAPE_CLASSES[:4]),
    "all": WorldConfig(**_JITTERED_64PX, classes=SHAPE_CLASSES),
}
