"""The Flux-Kontext editor on a tiny random pipeline the test builds and saves locally: diffusers' real
`FluxKontextPipeline` code path, loaded from a directory, seeded per edit and batched."""

import numpy as np
import pytest
from PIL import Image

pytest.importorskip(
    "diffusers", reason="the Flux-Kontext editor needs the diffusers extra: pip install 'pdgen[diffusers]'"
)

from pdgen.editors.flux_kontext import FluxKontextEditor  # noqa: E402
from pdgen.scene.parser import parse  # noqa: E402
from pdgen.scene.plan import plan  # noqa: E402
from pdgen.testing.tiny_flux import TINY_SIZE, save_tiny_flux_kontext  # noqa: E402

GOALS = plan(parse("a red circle left of a blue square"), 0)


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return save_tiny_flux_kontext(tmp_path_factory.mktemp("flux") / "tiny-kontext")


@pytest.fixture(scope="module")
def editor(pipeline_dir):
    return FluxKontextEditor(pipeline_dir, device="cpu", dtype="float32", num_inference_steps=2,
                             size=TINY_SIZE, max_sequence_length=32, auto_resize=False)  # fmt: skip


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_first_step_edits_a_blank_canvas_and_later_steps_the_image_before(editor):
    first = editor.edit(None, None, GOALS[0])
    second = editor.edit(first, GOALS[0], GOALS[1])
    assert first.size == second.size == (TINY_SIZE, TINY_SIZE) and first.mode == "RGB"
    assert not np.array_equal(pixels(first), pixels(second))


def test_an_edit_is_a_function_of_its_seed_instruction_and_input(editor):
    canvas = Image.new("RGB", (TINY_SIZE, TINY_SIZE), "grey")
    once, again = editor.edit(canvas, None, GOALS[1]), editor.edit(canvas, None, GOALS[1])
    assert np.array_equal(pixels(once), pixels(again))
    assert editor.edit_seed(canvas, GOALS[1].ins) != editor.edit_seed(canvas, GOALS[2].ins)


def test_a_batch_makes_what_the_edits_make_one_by_one(editor):
    canvas = Image.new("RGB", (TINY_SIZE, TINY_SIZE), "grey")
    batch = editor.edit_batch([canvas, None], [GOALS[1], GOALS[2]])
    alone = [editor.edit(canvas, None, GOALS[1]), editor.edit(None, None, GOALS[2])]
    for together, single in zip(batch, alone, strict=True):
        assert np.abs(pixels(together) - pixels(single)).max() <= 1  # each edit has its own noise


def test_a_directory_that_is_not_a_pipeline_is_named(tmp_path, pipeline_dir):
    with pytest.raises(ValueError, match=f"{tmp_path} is not a diffusers pipeline directory"):
        FluxKontextEditor(tmp_path, device="cpu")
    with pytest.raises(ValueError, match="dtype must be bfloat16, float16 or float32"):
        FluxKontextEditor(pipeline_dir, device="cpu", dtype="int8")
