"""The world judge's checks of a conflict sample, shared by the symbolic, self-sampled and alignment tests."""

from pdgen.judges.world import WorldJudge
from pdgen.scene.describe import describe_scene
from pdgen.scene.graph import NATURAL_PREDICATE, SceneGraph
from pdgen.scene.parser import parse
from pdgen.scene.plan import StepGoal
from pdgen.trajectory import Inspect, Plan, Refine
from pdgen.world.config import WorldConfig

WORLD = WorldConfig()


def goal(text: str, op: str = "add") -> StepGoal:
    """A step whose scene is ``text`` (the judge reads only the graph)."""
    graph = parse(text) if text else SceneGraph()
    return StepGoal(op, f"Step to {text}.", describe_scene(graph), graph)


def inspects_the_last_step(trajectory) -> bool:
    """Whether the trajectory's inspection is of its last step: no Plan after it (a Refine is no Plan)."""
    i = next(k for k, step in enumerate(trajectory.steps) if isinstance(step, Inspect))
    return not any(isinstance(step, Plan) for step in trajectory.steps[i + 1 :])


def check_with_world_judge(sample, world: WorldConfig = WORLD) -> None:
    """The world's own judge agrees with every sample: images show their goals, the answer shows the
    prompt, a negative's inspected step breaks the prompt (and the analysis names what), a positive's does
    not."""
    judge = WorldJudge(world)
    images = sample.trajectory.images
    assert len(images) == len(sample.goals)
    for image, step in zip(images, sample.goals, strict=True):
        assert judge.check_image(image, step).ok, (step.ins, judge.check_image(image, step).analysis)
    assert judge.check_image(sample.trajectory.answer, goal(sample.prompt_graph.describe())).ok
    inspections = [s for s in sample.trajectory.steps if isinstance(s, Inspect)]
    assert len(inspections) == 1
    (inspection,) = inspections
    k = sample.inspected
    inspected = sample.goals[k]
    # A consistent step's scene is part of the prompt's (objects, counts, relations); a conflicting one's not.
    within = inspected.graph.is_subgraph_of(sample.prompt_graph)
    if sample.label == "positive":
        assert within and inspection.refine is None and "conflicts" not in inspection.text
        assert not isinstance(sample.trajectory.steps[sample.trajectory.steps.index(inspection) + 1], Refine)
        return
    assert not within and inspection.refine is not None and "conflicts with the prompt" in inspection.text
    # The world judge, shown the flawed image and the consistent step it should have been, finds the
    # violation the inspection names.
    seen = judge.check_image(images[k], sample.goals[k + 1])
    assert not seen.ok
    wrong = [o for o in inspected.graph.objects if o.key not in sample.prompt_graph.counts()]
    if sample.kind in ("object", "attribute", "extra"):
        assert wrong and wrong[0].phrase() in inspection.text and wrong[0].noun(1) in seen.analysis
    if sample.kind == "relation":
        (want,) = sample.prompt_graph.relations
        (have,) = inspected.graph.relations
        subject = inspected.graph.objects[have.subject]
        assert (
            f"expected {subject.definite()} {want.predicate}" in seen.analysis.lower()
            and "found it" in seen.analysis
        )
        assert f"places {subject.definite()} {NATURAL_PREDICATE[have.predicate]}" in inspection.text
        assert f"asks for it {NATURAL_PREDICATE[want.predicate]}" in inspection.text
    refine = sample.trajectory.steps[sample.trajectory.steps.index(inspection) + 1]
    # The corrected plan says what the <refine> asks, and where the world put it (a world that names places).
    assert isinstance(refine, Refine) and refine.plan.ins.startswith(inspection.refine.removesuffix("."))
    assert judge.check_image(refine.image, sample.goals[k + 1]).ok
    assert sample.goals[k + 1].graph.is_subgraph_of(sample.prompt_graph)
