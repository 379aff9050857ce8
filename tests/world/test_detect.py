"""Acceptance: the world detector is >= 99% exact on rendered images and >= 95% on degraded ones."""

import numpy as np

from pdgen.scene.graph import SceneGraph, SceneObject
from pdgen.scene.vocabulary import COLORS, SHAPE_CLASSES
from pdgen.world.config import WorldConfig
from pdgen.world.detect import WorldDetector, connected_components
from pdgen.world.rollout import rollout

ALL = WorldConfig.from_name("all")


def _scenes(n: int, seed: int):
    """n random final scenes with up to three classes (all eight shapes), one or two instances each."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        names = rng.choice(SHAPE_CLASSES, size=int(rng.integers(1, 4)), replace=False)
        graph = SceneGraph(
            tuple(SceneObject(str(c), int(rng.integers(1, 3)), str(rng.choice(COLORS))) for c in names)
        )
        yield rollout(graph, seed * 1000 + i, ALL)[-1]


def _exact(detector, image, state) -> bool:
    found = sorted((d.name, d.color) for d in detector.detect(image))
    return found == sorted((p.name, p.color) for p in state.instances)


def test_exact_on_rendered_and_degraded_images(degrade_fn):
    detector = WorldDetector(ALL)
    rng = np.random.default_rng(0)
    clean = degraded = total = 0
    for step in _scenes(100, 1):
        total += 1
        clean += _exact(detector, step.image, step.state)
        degraded += _exact(detector, degrade_fn(step.image, rng), step.state)
    assert clean / total >= 0.99
    assert degraded / total >= 0.95


def test_tolerates_slightly_wrong_hues():
    from PIL import Image

    detector = WorldDetector(ALL)
    rng = np.random.default_rng(2)
    exact = 0
    for step in _scenes(50, 2):
        shifted = np.asarray(step.image, dtype=np.float32) + rng.uniform(-20, 20, 3)  # a colour cast
        exact += _exact(detector, Image.fromarray(np.clip(shifted, 0, 255).astype(np.uint8)), step.state)
    assert exact / 50 >= 0.95


def test_boxes_scores_and_masks():
    step = rollout("a red circle left of a blue square", 0)[-1]  # the default world: 32 px, 2x2
    detections = WorldDetector().detect(step.image)
    assert len(detections) == 2
    for d in detections:
        placed = next(p for p in step.state.instances if p.name == d.name)
        assert np.allclose(d.box, [v * 32 for v in placed.box], atol=1.5)
        assert d.score > 0.9
        assert d.mask.shape == (32, 32) and d.mask.sum() > 60  # an object is about 10 px wide


def test_rejects_blobs_that_fit_no_silhouette():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (153, 153, 153))
    ImageDraw.Draw(image).rectangle((5, 28, 58, 34), fill=(220, 30, 35))  # a long bar
    assert WorldDetector().detect(image) == []


def test_connected_components():
    mask = np.array([[1, 1, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1]], dtype=bool)
    labels = connected_components(mask)
    assert labels[0, 0] == labels[1, 1] != labels[0, 3] == labels[2, 3]
    assert labels[2, 0] not in (labels[0, 0], labels[0, 3]) and (labels[~mask] == -1).all()
