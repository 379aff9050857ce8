"""ShapesEval: the world's own renders score 1.0 on every tag; wrong images do not."""

import numpy as np
from PIL import Image

from pdgen.eval.shapes import score_shapes, write_ground_truth
from pdgen.models.bagel.config import BagelConfig
from pdgen.scene.vocabulary import TAGS
from pdgen.world.config import DEFAULT_WORLD
from pdgen.world.prompts import shapes_eval_prompts


def test_the_default_world_is_drawn_at_the_embedded_size_and_its_ground_truth_scores_one(tmp_path):
    """What the default world is for: the embedded model draws it at its own resolution, and a perfect
    model can score 1.0 there. (The 64 px world, downsampled to 32 px, cannot: docs/world.md.)"""
    embedded = BagelConfig.from_name("embedded")
    assert DEFAULT_WORLD.size == embedded.max_latent_size * embedded.latent_downsample == 32
    prompts = shapes_eval_prompts("test", per_tag=6)
    write_ground_truth(tmp_path, prompts, samples=2)
    rows, summary = score_shapes(tmp_path)
    assert len(rows) == 2 * len(prompts)
    with Image.open(next(tmp_path.glob("*/samples/0000.png"))) as image:
        assert image.size == (DEFAULT_WORLD.size, DEFAULT_WORLD.size)
    assert {tag: summary[tag] for tag in TAGS} == dict.fromkeys(TAGS, 1.0) and summary["overall"] == 1.0


def test_swapped_images_fail_with_reasons(tmp_path):
    prompts = [
        {
            "tag": "colors",
            "include": [{"class": "circle", "count": 1, "color": "red"}],
            "prompt": "a photo of a red circle",
        },
        {
            "tag": "colors",
            "include": [{"class": "circle", "count": 1, "color": "blue"}],
            "prompt": "a photo of a blue circle",
        },
    ]
    write_ground_truth(tmp_path, prompts, samples=1)
    (tmp_path / "00000" / "samples" / "0000.png").replace(tmp_path / "00001" / "samples" / "0001.png")
    rows, summary = score_shapes(tmp_path)
    wrong = [r for r in rows if not r["correct"]]
    assert [r["reason"] for r in wrong] == ["expected blue circle>=1, found 0 blue; and 1 red"]
    assert summary["colors"] == 0.5 and np.isclose(summary["overall"], 0.5)
