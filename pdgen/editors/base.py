"""The `Editor` protocol: what the data pipeline asks of an image editor.

The paper used Flux-Kontext to produce each intermediate image from the previous one and the step's
instruction; pdgen's default is the shapes world (`pdgen.editors.world.WorldEditor`), which is exact.
"""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image

from pdgen.scene.plan import StepGoal


class Editor(Protocol):
    """Apply one step goal to an image.

    `before` is whatever the back end knows about the image beyond its pixels: the world's placed
    objects for the world editor, the previous `StepGoal` (or None) for a pixel editor.
    """

    def edit(self, image: Image.Image | None, before: Any, goal: StepGoal) -> Image.Image: ...
