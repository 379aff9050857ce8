import pytest
import torch

from pdgen.eval.metric import GenEvalScore
from pdgen.scene.graph import SceneGraph
from pdgen.world.config import WorldConfig
from pdgen.world.detect import WorldDetector
from pdgen.world.prompts import metadata_row
from pdgen.world.rollout import rollout

LARGE = WorldConfig.from_name("large")  # has a star


def test_metric_accumulates_per_tag_and_averages_tags():
    metric = GenEvalScore(WorldDetector(LARGE))
    good = rollout("two circles", 0, LARGE)[-1].image
    bad = rollout("three circles", 0, LARGE)[-1].image
    counting = metadata_row(rollout("two circles", 0, LARGE)[-1].goal.graph)
    single = metadata_row(SceneGraph.from_geneval([{"class": "star", "count": 1}]))
    metric.update([good, bad], [counting, counting])
    metric.update([rollout("a star", 0, LARGE)[-1].image], [single])
    scores = metric.compute()
    assert scores["counting"] == pytest.approx(0.5) and scores["single_object"] == 1.0
    assert scores["overall"] == pytest.approx(0.75) and isinstance(scores["overall"], torch.Tensor)
    with pytest.raises(ValueError, match="2 images but 1"):
        metric.update([good, bad], [counting])
