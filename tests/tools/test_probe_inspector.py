"""tools/probe_inspector.py: where a subset's verdict is read, and what counts as inspecting and as a right
verdict. Logits made by hand stand in for the model (its forward pass is the trunk's, tested elsewhere)."""

import pytest
import torch
from toolkit import imported_tool

from pdgen.data.alignment import AlignmentSpec, alignment_samples
from pdgen.data.conflict import ConflictSpec, conflict_samples
from pdgen.data.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def probe():
    yield from imported_tool("probe_inspector")


@pytest.fixture(scope="module")
def subsets(probe):
    return {
        "conflict": probe.labelled(conflict_samples(ConflictSpec(1, 16), "val")),
        "alignment": probe.labelled(alignment_samples(AlignmentSpec(1, 16), "val")),
    }


@pytest.fixture(scope="module")
def tokenizer(subsets):
    return train_tokenizer(t.to_text() for samples in subsets.values() for t, _ in samples)


def word(tokenizer, ids) -> set[str]:
    return {tokenizer.decode([i]).strip() for i in ids}


def test_a_conflict_verdict_is_read_after_its_evidence(probe, subsets, tokenizer):
    tokens = probe.inspection_tokens(tokenizer, subsets["conflict"])
    assert (word(tokenizer, tokens.positive), word(tokenizer, tokens.negative)) == ({"is"}, {"conflicts"})
    assert word(tokenizer, tokens.openers) == {"The"}


def test_an_alignment_verdict_is_read_after_its_evidence(probe, subsets, tokenizer):
    tokens = probe.inspection_tokens(tokenizer, subsets["alignment"])
    assert (word(tokenizer, tokens.positive), word(tokenizer, tokens.negative)) == ({"follows"}, {"does"})
    trajectory, _ = subsets["alignment"][0]
    text = probe.inspection(trajectory).text
    position = probe.verdict_position(tokenizer, text)
    evidence = tokenizer.decode(tokenizer(text)["input_ids"][:position])
    assert evidence.startswith("The step asks for") and evidence.endswith("So the image")


def test_inspections_whose_verdicts_do_not_part_have_no_verdict_token(probe, subsets, tokenizer):
    positives = [(t, False) for t, _ in subsets["conflict"][:2]]
    with pytest.raises(ValueError, match="same token"):
        probe.inspection_tokens(tokenizer, positives + [(positives[0][0], True)])


def test_an_inspection_without_a_verdict_is_named(probe, tokenizer):
    with pytest.raises(ValueError, match="no verdict marker .* in 'Looks fine.'"):
        probe.verdict_position(tokenizer, "Looks fine.")


PLAN = 0


def logits(opener: float, plan: float, positive: float, negative: float) -> torch.Tensor:
    rows = torch.zeros(2, 5)
    rows[0, PLAN], rows[0, 2] = plan, opener
    rows[1, 3], rows[1, 4] = positive, negative
    return rows


@pytest.mark.parametrize(
    ("scores", "negative", "expected"),
    [
        ((1.0, 0.0, 0.0, 1.0), True, (True, True)),  # inspects, says what is wrong
        ((0.0, 1.0, 0.0, 1.0), True, (False, True)),  # would rather plan, but would flag it
        ((1.0, 0.0, 0.0, 1.0), False, (True, False)),  # inspects a right step and invents a flaw
        ((1.0, 0.0, 1.0, 0.0), False, (True, True)),
    ],
)
def test_inspecting_is_an_opener_above_the_plan_and_the_verdict_the_likelier_side(
    probe, scores, negative, expected
):
    tokens = probe.InspectionTokens(openers=(1, 2), positive=(3,), negative=(4,))
    assert probe.judged(logits(*scores), tokens, PLAN, negative, position=1) == expected
