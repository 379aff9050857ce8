import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdgen.scene.graph import Relation, SceneGraph, SceneObject
from pdgen.scene.parser import parse
from pdgen.scene.vocabulary import COLORS, RELATIONS, SHAPE_CLASSES

DOG_RIGHT_OF_BEAR = [
    {"class": "teddy bear", "count": 1},
    {"class": "dog", "count": 1, "position": ["right of", 0]},
]


def test_geneval_round_trip_position():
    graph = SceneGraph.from_geneval(DOG_RIGHT_OF_BEAR)
    assert graph.objects == (SceneObject("teddy bear"), SceneObject("dog"))
    assert graph.relations == (Relation(1, "right of", 0),)
    assert graph.tag == "position"
    assert graph.to_geneval() == {"include": DOG_RIGHT_OF_BEAR}
    assert graph.geneval_prompt() == "a photo of a dog right of a teddy bear"
    assert graph.describe() == "a dog to the right of a teddy bear"


def test_exact_counts_get_geneval_exclude_and_naive_plural():
    graph = SceneGraph((SceneObject("sheep", 3),))
    assert graph.to_geneval() == {
        "include": [{"class": "sheep", "count": 3}],
        "exclude": [{"class": "sheep", "count": 4}],
    }
    assert graph.geneval_prompt() == "a photo of three sheeps"
    assert graph.describe() == "three sheep"
    assert graph.tag == "counting"


@pytest.mark.parametrize(
    ("objects", "tag"),
    [
        ((SceneObject("cat"),), "single_object"),
        ((SceneObject("cat"), SceneObject("dog")), "two_object"),
        ((SceneObject("cat", color="red"),), "colors"),
        ((SceneObject("cat", color="red"), SceneObject("dog", color="blue")), "color_attr"),
        ((SceneObject("cat", color="red"), SceneObject("dog")), None),
        ((SceneObject("cat", 2, "red"),), None),
    ],
)
def test_tags(objects, tag):
    assert SceneGraph(objects).tag == tag


def test_subgraph_and_errors():
    small = SceneGraph((SceneObject("circle", 1, "red"),))
    big = SceneGraph((SceneObject("circle", 2, "red"), SceneObject("star")), (Relation(1, "above", 0),))
    assert small.is_subgraph_of(big) and not big.is_subgraph_of(small)
    with pytest.raises(ValueError, match="twice"):
        SceneGraph((SceneObject("circle"), SceneObject("circle")))
    with pytest.raises(ValueError, match="unknown colour"):
        SceneObject("circle", color="teal")
    with pytest.raises(ValueError, match="reference"):
        SceneGraph((SceneObject("a"), SceneObject("b")), (Relation(0, "above", 1),)).to_geneval()
    with pytest.raises(ValueError, match=r"exclude\[0\]"):
        SceneGraph.from_geneval([{"class": "cat", "count": 2}], [{"class": "cat", "count": 5}])


def test_every_geneval_row_round_trips(geneval_rows):
    for row in geneval_rows:
        constraints = {key: row[key] for key in ("include", "exclude") if key in row}
        graph = SceneGraph.from_geneval(**constraints)
        assert graph.to_geneval() == constraints, row
        assert graph.tag == row["tag"], row
        assert graph.geneval_prompt() == row["prompt"], row


@st.composite
def geneval_graphs(draw) -> SceneGraph:
    """Graphs in GenEval's schema: distinct classes, each object the subject of at most one relation,
    whose reference comes earlier."""
    names = draw(st.lists(st.sampled_from(SHAPE_CLASSES), min_size=1, max_size=4, unique=True))
    objects, relations = [], []
    for i, name in enumerate(names):
        objects.append(SceneObject(name, draw(st.integers(1, 4)), draw(st.none() | st.sampled_from(COLORS))))
        if i and draw(st.booleans()):
            relations.append(Relation(i, draw(st.sampled_from(RELATIONS)), draw(st.integers(0, i - 1))))
    return SceneGraph(tuple(objects), tuple(relations))


@given(geneval_graphs())
def test_graph_to_constraints_to_graph(graph):
    assert SceneGraph.from_geneval(**graph.to_geneval()) == graph


@given(geneval_graphs())
def test_text_renderer_and_parser_agree(graph):
    assert parse(graph.describe()).same_as(graph), graph.describe()


def test_describe_refers_back_with_the():
    graph = SceneGraph(
        (SceneObject("square"), SceneObject("star", 2, "red"), SceneObject("circle")),
        (Relation(1, "above", 0), Relation(2, "left of", 0), Relation(2, "below", 1)),
    )
    assert graph.describe() == (
        "two red stars above a square, a circle to the left of the square and the circle below the red stars"
    )
    assert parse(graph.describe()) == graph
