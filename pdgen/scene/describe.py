"""The scene description (a plan's ``<des>`` text), written and read in one place.

The planner (``pdgen.scene.plan``) writes every step's ``<des>`` with ``describe_scene``; the conflict
subset, the step judge and the process metric read a model's ``<des>`` back into a scene graph with
``read_scene``. One template, so that what is written is exactly what can be read::

    describe_scene(graph)   "The scene shows a red circle above a blue square on a grey background."
    describe_scene(empty)   "An empty grey background."

A world that names places (``pdgen.world.places``) appends ``" Places: …"`` to the description;
``strip_places`` takes it off again, and ``read_scene`` does so before it parses.
"""

from __future__ import annotations

from pdgen.scene.graph import SceneGraph, article
from pdgen.scene.parser import parse

BACKGROUND = "grey"
"""The background word the planner writes (``pdgen.scene.plan.plan``'s default)."""
PLACES = " Places: "
"""Where the places sentence starts in a description."""


def describe_scene(graph: SceneGraph, background: str = BACKGROUND) -> str:
    """The ``<des>`` text of a scene, in the planner's words ("The scene shows … on a grey background.")."""
    if not graph.objects:
        return f"An empty {background} background."
    return f"The scene shows {graph.describe()} on {article(background)} {background} background."


def strip_places(des: str) -> str:
    """The description without its places sentence (unchanged when it has none)."""
    return des.split(PLACES, 1)[0]


def read_scene(des: str, background: str = BACKGROUND) -> SceneGraph:
    """Inverse of `describe_scene`: the scene graph a ``<des>`` text describes.

    Raises:
        ValueError: (a ``ParseError`` among them) text that is not a planner-style description.
    """
    des = strip_places(des)  # a world that names places ends its descriptions with them
    if des == describe_scene(SceneGraph(), background):
        return SceneGraph()
    head, tail = "The scene shows ", f" on {article(background)} {background} background."
    if not (des.startswith(head) and des.endswith(tail)):
        raise ValueError(f"not a scene description of the form {head!r}…{tail!r}: {des[:80]!r}")
    return parse(des[len(head) : -len(tail)])
