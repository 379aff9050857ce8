"""ShapesEdit: hand-made exact edits score 1.0, each broken edit type is scored wrong, and the command reports
per type with counts and intervals."""

import json

import pytest

from pdgen.cli import main
from pdgen.data.edit import EDIT_TYPES
from pdgen.data.prompts import read_prompts
from pdgen.eval.edits import EditScorer, edit_cases
from pdgen.world.config import DEFAULT_WORLD
from pdgen.world.layout import Placed, WorldState
from pdgen.world.render import render

RED_CIRCLE = ("circle", "red", (0, 0))
BLUE_SQUARE = ("square", "blue", (0, 1))
SOURCE = [RED_CIRCLE, BLUE_SQUARE]


def picture(*objects):
    """The world's render of objects (class, colour, cell), each centred in its cell of the 2x2 grid."""

    def placed(name, color, cell):
        top, left = cell[0] * 0.5 + 0.09, cell[1] * 0.5 + 0.09
        return Placed(name, color, color, (left, top, left + 0.32, top + 0.32), cell)

    return render(WorldState(tuple(placed(*o) for o in objects)), DEFAULT_WORLD)


def ref(obj):
    return {"name": obj[0], "color": obj[1], "cell": list(obj[2])}


def case(tag, *edits):
    return {"prompt": "an edit", "tag": tag, "source": [ref(o) for o in SOURCE], "edits": list(edits)}


def op(kind, target=None, result=None, relation=None):
    return {"op": kind, "target": target and ref(target), "result": result, "relation": relation}


RECOLOR = case("recolor", op("recolor", RED_CIRCLE, ["circle", "green"]))
REPLACE = case("replace", op("replace", RED_CIRCLE, ["triangle", "red"]))
ADD = case("add", op("add", None, ["triangle", "green"], ["left of", ["square", "blue"]]))
REMOVE = case("remove", op("remove", BLUE_SQUARE))
MOVE = case("move", op("move", RED_CIRCLE, ["circle", "red"], ["below", ["square", "blue"]]))
COMBO = case("combo", op("recolor", RED_CIRCLE, ["circle", "green"]), op("remove", BLUE_SQUARE))

EXACT = {
    "recolor": (RECOLOR, [("circle", "green", (0, 0)), BLUE_SQUARE]),
    "replace": (REPLACE, [("triangle", "red", (0, 0)), BLUE_SQUARE]),
    "add": (ADD, [*SOURCE, ("triangle", "green", (1, 0))]),
    "remove": (REMOVE, [RED_CIRCLE]),
    "move": (MOVE, [("circle", "red", (1, 1)), BLUE_SQUARE]),
    "combo": (COMBO, [("circle", "green", (0, 0))]),
}

BROKEN = [  # (case, what was drawn, requested, preserved)
    (RECOLOR, [("circle", "yellow", (0, 0)), BLUE_SQUARE], False, True),  # the wrong colour
    (RECOLOR, [("circle", "green", (0, 0)), ("square", "pink", (0, 1))], True, False),  # another changed too
    (REPLACE, [("square", "red", (0, 0)), BLUE_SQUARE], False, True),  # the wrong class
    (ADD, [*SOURCE, ("triangle", "green", (1, 1))], False, True),  # below the square, not left of it
    (ADD, [*SOURCE, ("triangle", "green", (1, 0)), ("circle", "pink", (1, 1))], True, False),  # and another
    (REMOVE, [BLUE_SQUARE], False, False),  # the other object removed
    (MOVE, SOURCE, False, True),  # not moved
    (MOVE, [BLUE_SQUARE], False, True),  # gone instead of moved
    (MOVE, [("circle", "red", (1, 1)), ("square", "blue", (1, 0))], False, False),  # the square moved too
    (COMBO, [("circle", "green", (0, 0)), BLUE_SQUARE], False, True),  # the second change left out
]


@pytest.fixture(scope="module")
def scorer():
    return EditScorer(DEFAULT_WORLD)


@pytest.mark.parametrize("kind", sorted(EXACT))
def test_an_exact_edit_is_correct(scorer, kind):
    edit, drawn = EXACT[kind]
    verdict = scorer(edit, picture(*drawn))
    assert verdict.correct and verdict.reasons == ()


@pytest.mark.parametrize(("edit", "drawn", "requested", "preserved"), BROKEN)
def test_a_broken_edit_is_wrong_for_the_right_reason(scorer, edit, drawn, requested, preserved):
    verdict = scorer(edit, picture(*drawn))
    assert not verdict.correct and (verdict.requested, verdict.preserved) == (requested, preserved)
    assert verdict.reasons


def test_every_edit_type_has_a_broken_case():
    assert {edit["tag"] for edit, *_ in BROKEN} == set(EXACT)


def test_leaving_the_input_as_it_is_changes_nothing_else_but_does_not_edit(scorer):
    for edit, _ in EXACT.values():
        verdict = scorer(edit, picture(*SOURCE))
        assert (verdict.requested, verdict.preserved) == (False, True)


def test_the_benchmark_is_test_requests_the_referee_reads_exactly(scorer):
    cases = edit_cases(per_type=2)
    assert [c.kind for c in cases] == [kind for kind in EDIT_TYPES for _ in range(2)]
    assert all(scorer.reads_exactly(c) for c in cases)
    assert [c.request for c in cases] == [c.request for c in edit_cases(per_type=2)]  # seeded


def test_truth_scores_one_per_type_with_counts_and_intervals(tmp_path, capsys):
    main(["eval", "edits", "--images", str(tmp_path / "truth"), "--truth", "--per_type", "2"])
    table = capsys.readouterr().out
    assert "overall    1.000      12" in table
    report = json.loads((tmp_path / "truth" / "eval_edits.json").read_text())
    correct = report["summary"]["correct"]
    assert set(correct) == set(EXACT) | {"overall"} and correct["move"]["n"] == 2
    assert correct["overall"]["rate"] == 1.0 and 0.3 < correct["overall"]["interval_95"][0] < 1.0
    assert all(row["correct"] for row in report["rows"])


def test_the_cases_file_is_a_prompt_file_with_input_images(tmp_path, capsys):
    main(["eval", "edit-cases", "--out", str(tmp_path), "--per_type", "1"])
    assert "6 cases" in capsys.readouterr().out
    records = read_prompts(tmp_path / "cases.jsonl")
    assert len(records) == 6 and all(r.image is not None and r.image.is_file() for r in records)
    assert records[0].metadata["tag"] == "recolor" and "edits" in records[0].metadata


def test_a_folder_of_other_prompts_is_refused(tmp_path):
    main(["eval", "shapes", "--images", str(tmp_path), "--truth", "--per_tag", "1", "--samples", "1"])
    with pytest.raises(SystemExit, match="not a ShapesEdit case"):
        main(["eval", "edits", "--images", str(tmp_path)])
