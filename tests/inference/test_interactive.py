"""The interactive terminal driven by scripted input: accept, stop, redraw, a typed plan or critique, and
the model's own texts accepted, edited in place or vetoed before they are drawn."""

import dataclasses
import io

from inference_testkit import CRITIQUE, PLAN_1, PLAN_2, REFINE

from pdgen.inference import Script, generate
from pdgen.inference.interactive import Interactive
from pdgen.inference.loop import VISION_BLOCK
from pdgen.trajectory import IM_END, VISION_START, Inspect, Plan, Refine, Sketch

PROMPT = "a red circle and a blue square"


def run(trunk, tokenizer, packing, config, answers: list[str], **kwargs):
    """One generation with the terminal answering `answers` (one line each); returns it and the transcript."""
    output = io.StringIO()
    controller = Interactive(io.StringIO("".join(a + "\n" for a in answers)), output, **kwargs)
    result = generate(trunk, tokenizer, PROMPT, config, 0, packing, controller=controller)
    return result, output.getvalue()


def test_a_typed_plan_is_drawn_and_stop_ends_with_that_image(trunk, tokenizer, packing, fast):
    result, transcript = run(trunk, tokenizer, packing, fast, [PLAN_1, "s"])
    assert [type(s) for s in result.trajectory.steps] == [Plan, Sketch]
    assert result.stop_reason == "stop_token" and result.costs.text_tokens == 0
    assert f"prompt: {PROMPT}" in transcript
    assert f"plan (yours): {PLAN_1}" in transcript
    assert "[image 1] 64x64" in transcript and "the model wants to" in transcript


def test_redraw_then_a_new_plan_then_stop(trunk, tokenizer, packing, fast, tmp_path):
    result, transcript = run(trunk, tokenizer, packing, fast, [PLAN_1, "r", PLAN_2, "s"], image_dir=tmp_path)
    assert [s.ins for s in result.trajectory.steps if isinstance(s, Plan)] == [
        "Add a red circle.",
        "Add a red circle.",
        "Add a blue square.",
    ]
    assert len(result.images) == 3 and result.trajectory.answer.tobytes() == result.images[-1].tobytes()
    assert (tmp_path / "3.png").is_file() and f"saved to {tmp_path / '1.png'}" in transcript


def test_a_typed_critique_is_the_inspection_and_the_model_refines(talkative, tokenizer, packing, fast):
    critique = f"{CRITIQUE}<refine>{REFINE}</refine>"
    config = dataclasses.replace(fast, max_text_tokens=24)
    result, transcript = run(talkative, tokenizer, packing, config, [PLAN_1, critique, "", "s"])
    assert result.text.count(VISION_BLOCK) >= 1
    assert f"{PLAN_1}{VISION_BLOCK}{critique}" in result.text
    assert f"inspection (yours): {critique}" in transcript


def test_bad_answers_are_refused_and_asked_again(trunk, tokenizer, packing, fast):
    answers = ["<ins>no des</ins>", PLAN_1, "<|im_end|>", "<ins>half a plan", "s"]
    result, transcript = run(trunk, tokenizer, packing, fast, answers)
    assert "not used: a plan is exactly" in transcript
    assert "not used: '<|im_end|>' is not a step tag" in transcript
    assert transcript.count("not used") == 3
    assert len(result.images) == 1 and result.stop_reason == "stop_token"


def test_enter_and_the_end_of_input_accept_what_the_model_proposes(talkative, tokenizer, packing, fast):
    result, transcript = run(talkative, tokenizer, packing, fast, [PLAN_1])
    assert result.text.startswith(f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n{PLAN_1}")
    assert transcript.count("[image") == len(result.images) - (result.stop_reason == "max_images")


def test_the_models_plan_edited_in_place_is_drawn_as_if_it_had_been_dictated(
    talkative, tokenizer, packing, fast
):
    """Enter lets the model plan; the user replaces its plan before it is drawn, then stops."""
    result, transcript = run(talkative, tokenizer, packing, fast, ["", PLAN_1, "s"])
    dictated = generate(
        talkative, tokenizer, PROMPT, fast, 0, packing, controller=Script([VISION_START, IM_END], [PLAN_1])
    )
    assert result.text == dictated.text and result.token_ids == dictated.token_ids
    assert result.images[0].tobytes() == dictated.images[0].tobytes()
    assert result.costs.text_tokens > 0  # the model did write a plan: it was taken back
    shown, asked = transcript.index("or type a replacement"), transcript.index(f"plan (yours): {PLAN_1}")
    assert shown < asked < transcript.index("[image 1]")


def test_a_veto_draws_the_last_plan_again_instead_of_the_models_next_one(talkative, tokenizer, packing, fast):
    """The user writes a plan and a critique; the model's corrected plan is vetoed with r: the first plan is
    drawn again as the Refine."""
    critique = f"{CRITIQUE}<refine>{REFINE}</refine>"
    result, transcript = run(talkative, tokenizer, packing, fast, [PLAN_1, critique, "r", "s"])
    steps = result.trajectory.steps
    assert [type(s) for s in steps] == [Plan, Sketch, Inspect, Refine]
    assert steps[3].plan == steps[0] and result.trajectory.answer.tobytes() == result.images[1].tobytes()
    assert transcript.count(f"plan (yours): {PLAN_1}") == 2


def test_the_models_first_text_may_only_be_replaced_by_a_plan(talkative, tokenizer, packing, fast):
    result, transcript = run(talkative, tokenizer, packing, fast, ["", CRITIQUE, "s", "r", PLAN_2, "s"])
    assert "not used: a plan is exactly" in transcript
    assert "not used: s (stop) is answered after an image" in transcript
    assert "not used: there is no plan to redraw yet" in transcript
    assert [s.ins for s in result.trajectory.steps if isinstance(s, Plan)] == ["Add a blue square."]
    assert result.stop_reason == "stop_token" and len(result.images) == 1
