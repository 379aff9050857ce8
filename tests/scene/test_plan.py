from hypothesis import given, settings
from hypothesis import strategies as st

from pdgen.scene.graph import Relation, SceneGraph, SceneObject
from pdgen.scene.parser import parse
from pdgen.scene.plan import plan
from pdgen.scene.vocabulary import COLORS, RELATIONS, SHAPE_CLASSES


@st.composite
def graphs(draw) -> SceneGraph:
    """Random graphs: up to four distinct shape objects, each maybe related to an earlier one."""
    names = draw(st.lists(st.sampled_from(SHAPE_CLASSES), min_size=1, max_size=4, unique=True))
    objects, relations = [], []
    for i, name in enumerate(names):
        objects.append(SceneObject(name, draw(st.integers(1, 3)), draw(st.none() | st.sampled_from(COLORS))))
        if i and draw(st.booleans()):
            relations.append(Relation(i, draw(st.sampled_from(RELATIONS)), draw(st.integers(0, i - 1))))
    return SceneGraph(tuple(objects), tuple(relations))


@settings(max_examples=60, deadline=None)
@given(graph=graphs(), seed=st.integers(0, 2**32 - 1))
def test_plan_is_a_subgraph_chain_ending_at_the_prompt(graph, seed):
    steps = plan(graph, seed)
    assert steps[0].op == "background" and steps[0].graph == SceneGraph()
    assert all(step.op == "add" for step in steps[1:])
    assert len(steps) == 1 + graph.num_instances
    for before, after in zip(steps, steps[1:], strict=False):
        assert before.graph.is_subgraph_of(after.graph)
    assert steps[-1].graph == graph


@settings(max_examples=60, deadline=None)
@given(graph=graphs(), seed=st.integers(0, 2**32 - 1))
def test_no_relation_before_its_reference_is_complete(graph, seed):
    for step in plan(graph, seed):
        for r in step.graph.relations:
            reference = step.graph.objects[r.object]
            assert reference.count == graph.counts()[reference.key]


@settings(max_examples=60, deadline=None)
@given(graph=graphs(), seed=st.integers(0, 2**32 - 1), augment=st.floats(0.1, 1.0))
def test_augmented_plans_end_at_the_prompt(graph, seed, augment):
    steps = plan(graph, seed, augment=augment)
    assert steps[-1].graph == graph
    assert {s.op for s in steps} <= {"background", "add", "recolor", "replace", "remove", "move"}


def test_augmentation_uses_every_edit_operation():
    graph = parse("a red circle left of a blue square")
    ops = {step.op for seed in range(40) for step in plan(graph, seed, augment=1.0)}
    assert ops == {"background", "add", "recolor", "replace", "remove", "move"}


def test_texts():
    steps = plan(parse("a blue square to the left of two red circles"), 0)
    assert [s.ins for s in steps] == [
        "Start with an empty grey background.",
        "Add a red circle.",
        "Add another red circle.",
        "Add a blue square to the left of the red circles.",
    ]
    assert (
        steps[-1].des == "The scene shows a blue square to the left of two red circles on a grey background."
    )
    assert plan(parse("a star"), 0) == plan(parse("a star"), 0)
