"""Controllers: a Script forces what it lists and leaves the rest to the model."""

from pdgen.inference import LoopState, ModelDecides, Script
from pdgen.trajectory import IM_END, IM_START, VISION_START

STATE = LoopState(prompt="a red circle", text="", images=(), after="text")


def test_a_script_forces_in_order_and_then_lets_the_model_choose():
    script = Script(decisions=[VISION_START, None], texts=["<ins>a</ins><des>b</des>"])
    options = (VISION_START, IM_START)
    assert script.decide(STATE, options, proposed=IM_START) == VISION_START
    assert script.decide(STATE, options, proposed=IM_START) == IM_START  # None: the model's proposal
    assert script.decide(STATE, options, proposed=IM_START) == IM_START  # used up
    assert script.write(STATE) == "<ins>a</ins><des>b</des>"
    assert script.write(STATE) is None


def test_the_default_controller_takes_the_models_choices():
    assert ModelDecides().decide(STATE, (IM_START, IM_END), proposed=IM_END) == IM_END
    assert ModelDecides().write(STATE) is None
