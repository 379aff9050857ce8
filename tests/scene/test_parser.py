import pytest

from pdgen.scene.graph import Relation, SceneGraph, SceneObject
from pdgen.scene.parser import ParseError, TemplateParser, parse


def test_all_geneval_prompts_parse_to_their_metadata(geneval_rows):
    assert len(geneval_rows) == 553
    for row in geneval_rows:
        graph = parse(row["prompt"])
        assert graph.to_geneval() == {key: row[key] for key in ("include", "exclude") if key in row}, row


@pytest.mark.parametrize(
    ("prompt", "graph"),
    [
        (
            "a blue square to the left of two red circles",
            SceneGraph(
                (SceneObject("circle", 2, "red"), SceneObject("square", 1, "blue")),
                (Relation(1, "left of", 0),),
            ),
        ),
        ("three yellow triangles", SceneGraph((SceneObject("triangle", 3, "yellow"),))),
        ("A photo of 2 benchs.", SceneGraph((SceneObject("bench", 2),))),
        ("an orange", SceneGraph((SceneObject("orange"),))),
        ("an orange cup", SceneGraph((SceneObject("cup", 1, "orange"),))),
        (
            "a red circle on top of a star, and a green cross below the star",
            SceneGraph(
                (SceneObject("star"), SceneObject("circle", 1, "red"), SceneObject("cross", 1, "green")),
                (Relation(1, "above", 0), Relation(2, "below", 0)),
            ),
        ),
    ],
)
def test_free_form_phrasings(prompt, graph):
    assert parse(prompt) == graph


def test_unknown_words_are_named():
    with pytest.raises(ParseError, match="'flying', 'purplish'") as error:
        parse("a photo of a flying purplish dog")
    assert error.value.words == ("flying", "purplish")


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a red", "as '\\[count\\] \\[colour\\] class'"),
        ("circles", "how many"),
        ("a circle left of", "nothing on one side"),
        ("a cat and a cat", "named twice"),
    ],
)
def test_structural_errors(prompt, message):
    with pytest.raises(ParseError, match=message):
        parse(prompt)


def test_custom_vocabulary():
    parser = TemplateParser(classes=("blob",), colors=("red",))
    assert parser.parse("two red blobs") == SceneGraph((SceneObject("blob", 2, "red"),))
    with pytest.raises(ParseError, match="'circle'"):
        parser.parse("a circle")
