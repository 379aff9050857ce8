"""The rules engine against hand-worked cases, one per rule and reason string of the official scorer."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from pdgen.eval.geneval import (
    Detection,
    ImageResult,
    ScoringOptions,
    compute_iou,
    evaluate,
    relative_position,
    result_row,
    score_folder,
    score_image,
    select_detections,
    summarize,
)
from pdgen.eval.samples import write_prompt_folder
from pdgen.images import UnreadableImage


def det(name, box, score=0.95, color=None):
    return Detection(name, box, score, None, color)


def colors_of(detections, name):
    return [d.color for d in detections]


def run(detections, metadata):
    return evaluate(select_detections(detections, metadata["tag"]), metadata, colors_of)


# ---- rule 4: relative position --------------------------------------------------------------------


def test_relative_position_worked_examples():
    # Docstring example: offset (-20, -2), sizes (20, 20) -> revised (-18, 0) / 20.1 -> left only.
    assert relative_position((0, 0, 10, 10), (20, 2, 30, 12)) == ("left of",)
    assert relative_position((20, 2, 30, 12), (0, 0, 10, 10)) == ("right of",)
    assert relative_position((0, 0, 10, 10), (0, 30, 10, 40)) == ("above",)
    # Diagonal: offset (30, 30), revised (28, 28) / 42.4 = 0.66 on both axes -> two relations.
    assert relative_position((30, 30, 40, 40), (0, 0, 10, 10)) == ("right of", "below")
    # Overlapping centres: the margin eats the whole offset -> no relation.
    assert relative_position((0, 0, 10, 10), (1, 1, 11, 11)) == ()
    # Offset (-12, 0) with sizes (20, 20): revised -10, /12 = -0.83 -> left; with threshold 0.55 it is gone.
    assert relative_position((0, 0, 10, 10), (12, 0, 22, 10)) == ("left of",)
    assert relative_position((0, 0, 10, 10), (12, 0, 22, 10), threshold=0.6) == ()


def test_a_relation_on_the_half_boundary_falls_the_way_float32_rounds_it():
    # float32 box values (what the detector hands over), given as Python floats. In float32 dx is exactly
    # 0.5, not > 0.5: 'below' only, as the official scorer decides; float64 would make dx 0.50000001 and
    # add 'right of'.
    a = (3.432375431060791, 5.0, 5.432375431060791, 7.0)
    assert all(float(np.float32(v)) == v for v in a)
    assert relative_position(a, (0.0, 0.0, 2.0, 2.0)) == ("below",)


# ---- rule 1: selection ----------------------------------------------------------------------------------


def test_a_score_of_exactly_float32_0_3_fails_the_threshold_whatever_its_type():
    # The official scorer compares float32 scores with 0.3 in float32, where they are equal; as a Python
    # float the same score is 0.30000001 > 0.3.
    score = np.float32(0.3)
    for given in (score, float(score)):
        assert select_detections([det("cat", (0, 0, 5, 5), given)], "single_object") == {}


def test_a_nan_score_is_dropped_without_scrambling_the_order_of_the_others():
    scores = [0.5, math.nan, 0.9, 0.7]
    ds = [det("cat", (i, 0, i + 5, 5), score) for i, score in enumerate(scores)]
    assert [d.score for d in select_detections(ds, "single_object")["cat"]] == [0.9, 0.7, 0.5]


def test_threshold_is_strict_and_counting_uses_0_9():
    ds = [det("cat", (0, 0, 5, 5), 0.3), det("cat", (10, 0, 15, 5), 0.31), det("cat", (20, 0, 25, 5), 0.95)]
    assert [d.score for d in select_detections(ds, "single_object")["cat"]] == [0.95, 0.31]
    assert [d.score for d in select_detections(ds, "counting")["cat"]] == [0.95]
    assert select_detections([det("dog", (0, 0, 1, 1), 0.2)], "two_object") == {}


def test_top_16_by_score_and_nms_off_by_default():
    ds = [det("cup", (0, 0, 10, 10), 0.4 + i / 100) for i in range(20)]
    kept = select_detections(ds, "colors")["cup"]
    assert len(kept) == 16 and [d.score for d in kept] == sorted((d.score for d in ds), reverse=True)[:16]
    same = [det("cup", (0, 0, 9, 9), 0.8), det("cup", (0, 0, 9, 9), 0.7), det("cup", (5, 0, 14, 9), 0.6)]
    assert len(select_detections(same, "colors")["cup"]) == 3
    # With NMS at 0.5: the duplicate (IoU 1) goes, the shifted box (IoU 1/3) stays.
    kept = select_detections(same, "colors", ScoringOptions(max_overlap=0.5))["cup"]
    assert [d.score for d in kept] == [0.8, 0.6]


def test_iou_uses_the_plus_one_area_convention():
    assert compute_iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert compute_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert compute_iou((0, 0, 9, 9), (20, 20, 29, 29)) == 0.0


# ---- rules 2-3: clauses and reason strings --------------------------------------------------------------


def test_count_clause():
    meta = {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}]}
    assert run([det("dog", (0, 0, 5, 5)), det("cat", (10, 0, 15, 5))], meta) == (True, "")
    assert run([det("dog", (0, 0, 5, 5))], meta) == (False, "expected cat>=1, found 0")
    meta = {
        "tag": "counting",
        "include": [{"class": "dog", "count": 2}],
        "exclude": [{"class": "dog", "count": 3}],
    }
    assert run([det("dog", (0, 0, 5, 5))], meta) == (False, "expected dog>=2, found 1")


def test_exclude_clause_counts_all_kept_detections():
    meta = {
        "tag": "counting",
        "include": [{"class": "clock", "count": 2}],
        "exclude": [{"class": "clock", "count": 3}],
    }
    three = [det("clock", (i * 10, 0, i * 10 + 5, 5)) for i in range(3)]
    assert run(three, meta) == (False, "expected clock<3, found 3")
    assert run(three[:2], meta) == (True, "")
    # Below the 0.9 counting threshold a third clock does not count.
    assert run([*three[:2], det("clock", (50, 0, 55, 5), 0.85)], meta) == (True, "")


def test_color_clause_reason_lists_every_predicted_colour():
    meta = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
    assert run([det("car", (0, 0, 5, 5), color="red")], meta) == (True, "")
    assert run([det("car", (0, 0, 5, 5), color="blue")], meta) == (
        False,
        "expected red car>=1, found 0 red; and 1 blue",
    )
    meta = {"tag": "colors", "include": [{"class": "car", "count": 2, "color": "red"}]}
    cars = [det("car", (0, 0, 5, 5), 0.9, "blue"), det("car", (10, 0, 15, 5), 0.8, "red")]
    assert run(cars, meta) == (False, "expected red car>=2, found 1 red; and 1 red, 1 blue")
    # Only the top-`count` detections are classified: a red third car with a lower score does not help.
    meta = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
    assert run(cars, meta) == (False, "expected red car>=1, found 0 red; and 1 blue")


POSITION = {
    "tag": "position",
    "include": [
        {"class": "teddy bear", "count": 1},
        {"class": "dog", "count": 1, "position": ["right of", 0]},
    ],
}


def test_position_clause():
    bear = det("teddy bear", (0, 0, 10, 10))
    assert run([bear, det("dog", (20, 0, 30, 10))], POSITION) == (True, "")
    assert run([bear, det("dog", (0, 30, 10, 40))], POSITION) == (
        False,
        "expected dog right of target, found below target",
    )
    assert run([bear, det("dog", (30, 30, 40, 40))], POSITION) == (True, "")  # diagonal: right of and below
    assert run([bear, det("dog", (1, 1, 11, 11))], POSITION) == (
        False,
        "expected dog right of target, found  target",
    )
    assert run([det("dog", (20, 0, 30, 10))], POSITION) == (
        False,
        "expected teddy bear>=1, found 0\nno target for dog to be right of",
    )


def test_position_is_checked_for_every_pair_and_only_after_colour():
    meta = {
        "tag": "position",
        "include": [{"class": "cat", "count": 2}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
    }
    cats = [det("cat", (20, 0, 30, 10)), det("cat", (20, 40, 30, 50))]
    assert run([*cats, det("dog", (0, 0, 10, 10))], meta) == (
        False,
        "expected dog left of target, found above target",
    )
    assert run([*cats, det("dog", (0, 20, 10, 30))], meta) == (True, "")
    meta["include"][1]["color"] = "red"  # a failed colour check skips the position check
    assert run([*cats, det("dog", (0, 0, 10, 10), color="blue")], meta) == (
        False,
        "expected red dog>=1, found 0 red; and 1 blue",
    )


# ---- scoring, rows and the summary ---------------------------------------------------------------------


class FakeDetector:
    def __init__(self, detections):
        self.detections = detections

    def detect(self, image):
        return self.detections

    def classify_colors(self, image, detections, name):
        return [d.color for d in detections]


def test_score_image_and_result_row():
    meta = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}
    result = score_image(
        None, meta, FakeDetector([det("cat", (1, 2, 3, 4), 0.5), det("dog", (0, 0, 1, 1), 0.1)])
    )
    assert result.correct and result.details() == {"cat": [[1.0, 2.0, 3.0, 4.0, 0.5]]}
    row = result_row("00000/samples/0000.png", meta, result)
    assert list(row) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert json.loads(row["metadata"]) == meta and row["reason"] == ""


def test_overall_is_the_mean_of_tag_means():
    rows = [
        {"tag": "counting", "correct": True},
        {"tag": "counting", "correct": False},
        {"tag": "colors", "correct": True},
    ]
    assert summarize(rows) == {
        "counting": 0.5,
        "colors": 1.0,
        "overall": 0.75,
        "image_mean": pytest.approx(2 / 3),
    }
    with pytest.raises(ValueError):
        summarize([])
    assert ImageResult(True, "", {}).details() == {}


def test_an_unreadable_image_is_named_by_its_path(tmp_path):
    metadata = {"tag": "single_object", "include": []}
    folder = write_prompt_folder(tmp_path, 0, metadata, [Image.new("RGB", (32, 32))])
    image = folder / "samples" / "0000.png"
    image.write_bytes(image.read_bytes()[:60])  # truncated: PIL's own error would not say which file
    with pytest.raises(UnreadableImage, match=f"^{image}: "):
        score_folder(tmp_path, detector=None)
