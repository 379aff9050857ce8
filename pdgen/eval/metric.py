"""`GenEvalScore`: GenEval's score as a torchmetrics `Metric`, for validation loops.

`update(images, metadata)` scores each image with the rules engine and a `Detector`; `compute()` returns
the per-tag accuracies and `overall` (the plain mean over the tags seen so far). State is two (6,)
count tensors (correct, total), summed across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torchmetrics import Metric

from pdgen.eval.geneval import DEFAULT_OPTIONS, Detector, ScoringOptions, score_image
from pdgen.scene.vocabulary import TAGS


class GenEvalScore(Metric):
    """GenEval accuracy per tag and overall.

    Args:
        detector: the detector + colour classifier (e.g. `pdgen.world.detect.WorldDetector`).
        options: the scorer's thresholds.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, detector: Detector, options: ScoringOptions = DEFAULT_OPTIONS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.detector = detector
        self.options = options
        self.add_state("correct", default=torch.zeros(len(TAGS)), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(TAGS)), dist_reduce_fx="sum")

    def update(self, images: Sequence[Image.Image], metadata: Sequence[dict[str, Any]]) -> None:
        if len(images) != len(metadata):
            raise ValueError(f"GenEvalScore.update: {len(images)} images but {len(metadata)} metadata rows")
        for image, row in zip(images, metadata, strict=True):
            if row.get("tag") not in TAGS:
                raise ValueError(f"GenEvalScore.update: metadata tag {row.get('tag')!r} is not one of {TAGS}")
            t = TAGS.index(row["tag"])
            self.total[t] += 1
            self.correct[t] += float(score_image(image, row, self.detector, self.options).correct)

    def compute(self) -> dict[str, torch.Tensor]:
        seen = self.total > 0
        if not seen.any():
            raise ValueError("GenEvalScore.compute: no images scored")
        accuracy = self.correct[seen] / self.total[seen]
        scores = {
            tag: acc
            for tag, acc in zip([t for t, s in zip(TAGS, seen, strict=True) if s], accuracy, strict=True)
        }
        scores["overall"] = accuracy.mean()
        return scores
