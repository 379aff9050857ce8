"""Shared pieces of the inference tests: the texts the tokenizer learns, a script of the paper's cycle."""

from pdgen.inference import Script
from pdgen.trajectory import IM_END, IM_START, VISION_START

PLAN_1 = "<ins>Add a red circle.</ins><des>A red circle.</des>"
CRITIQUE = "The circle is too small."
REFINE = "Make the circle larger."
PLAN_2 = "<ins>Add a blue square.</ins><des>A red circle and a blue square.</des>"

CORPUS = [PLAN_1, PLAN_2, f"{CRITIQUE}<refine>{REFINE}</refine>", "a red circle and a blue square"] * 8


def refine_script(texts: bool = True) -> Script:
    """Plan -> sketch -> inspect with <refine> -> refine -> stop, the paper's whole cycle.

    With ``texts=False`` only the decisions are forced and the model writes every text.
    """
    decisions = [VISION_START, IM_START, IM_START, VISION_START, IM_END]
    written = [PLAN_1, f"{CRITIQUE}<refine>{REFINE}</refine>", PLAN_2] if texts else []
    return Script(decisions=decisions, texts=written)
