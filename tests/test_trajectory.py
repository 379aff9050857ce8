"""The trajectory format: both round trips, the strict parsers with their offsets and paths, the stop rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pdgen.trajectory import (
    IM_END,
    IMAGE_PAD,
    KNOWN_TAGS,
    TAG_PATTERN,
    VISION_END,
    VISION_START,
    Inspect,
    Plan,
    Refine,
    Sketch,
    Trajectory,
    TrajectoryError,
    answer_span,
    stop_index,
    stop_offset,
)


def image(color: str, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (4, 3), color)


def example() -> Trajectory:
    """The docs' example: a plan is drawn, inspected, refined, and one more object is added."""
    return Trajectory(
        prompt="a red square left of a blue circle",
        steps=[
            Plan("Draw a red square.", "A red square on a white background."),
            Sketch(image("red")),
            Inspect("The square is on the right, but it should be left of the circle.", "Move it left."),
            Refine(Plan("Move the red square to the left.", "A red square on the left."), image("orange")),
            Plan("Add a blue circle on the right.", "A red square left of a blue circle."),
            Sketch(image("blue")),
        ],
    )


EXAMPLE_TEXT = (
    "<|im_start|>user\na red square left of a blue circle<|im_end|>\n<|im_start|>assistant\n"
    "<ins>Draw a red square.</ins><des>A red square on a white background.</des>"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "The square is on the right, but it should be left of the circle.<refine>Move it left.</refine>"
    "<ins>Move the red square to the left.</ins><des>A red square on the left.</des>"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "<ins>Add a blue circle on the right.</ins><des>A red square left of a blue circle.</des>"
    "<|vision_start|><|image_pad|><|vision_end|><|im_end|>"
)


# ----------------------------------------------------------------------------------------------------------
# Random trajectories

# Characters that make tag-like strings likely, so the tag-free filter and the tokenizer both get exercised.
field_text = st.text(alphabet=st.sampled_from(list("ab <>|/_\n\té")), max_size=10).filter(
    lambda text: not TAG_PATTERN.search(text)
)


@st.composite
def images(draw: st.DrawFn) -> Image.Image:
    mode = draw(st.sampled_from(["RGB", "RGBA", "L"]))
    width, height = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    channels = len(mode)
    pixels = draw(st.binary(min_size=width * height * channels, max_size=width * height * channels))
    return Image.frombytes(mode, (width, height), pixels)


plans = st.builds(Plan, field_text, field_text)


@st.composite
def trajectories(draw: st.DrawFn) -> Trajectory:
    """Random rounds: a plan and its sketch, an inspection then a plan, or an inspection that refines."""
    steps: list = [draw(plans), Sketch(draw(images()))]
    for move in draw(st.lists(st.sampled_from(["plan", "inspect", "refine"]), max_size=4)):
        if move == "plan":
            steps += [draw(plans), Sketch(draw(images()))]
        elif move == "inspect":
            steps += [Inspect(draw(field_text.filter(bool))), draw(plans), Sketch(draw(images()))]
        else:
            steps += [Inspect(draw(field_text), draw(field_text)), Refine(draw(plans), draw(images()))]
    prompt = draw(field_text.filter(bool))
    return Trajectory(prompt, steps, input_image=draw(st.none() | images()))


@given(trajectories())
def test_tagged_text_round_trip(trajectory: Trajectory) -> None:
    text = trajectory.to_text()
    parsed = Trajectory.from_text(text, trajectory.images)
    assert parsed == trajectory
    assert parsed.to_text() == text


@given(trajectories())
def test_json_and_png_round_trip(trajectory: Trajectory) -> None:
    files = trajectory.to_files()
    assert list(files) == ["trajectory.json"] + [f"{k:02d}.png" for k in range(len(trajectory.images))]
    assert Trajectory.from_files(files) == trajectory


@given(trajectories())
def test_segments_spell_the_text_and_number_the_images(trajectory: Trajectory) -> None:
    segments = trajectory.segments()
    assert "".join(segment.text for segment in segments) == trajectory.to_text()
    placeholders = [segment for segment in segments if segment.text == IMAGE_PAD]
    assert [segment.image for segment in placeholders] == list(range(len(trajectory.images)))
    assert {segment.role for segment in placeholders[1:]} <= {"image"}


@given(trajectories())
def test_generation_stops_at_the_end_of_every_trajectory(trajectory: Trajectory) -> None:
    text = trajectory.to_text()
    assert stop_offset(text) == len(text) - len(IM_END)
    # The same rule on token ids: tags are single tokens, other characters one token each.
    ids = {tag: 100_000 + number for number, tag in enumerate(sorted(KNOWN_TAGS))}
    tokens = [
        ids[segment.text] if segment.text in ids else ord(char)
        for segment in trajectory.segments()
        for char in ([segment.text] if segment.text in ids else segment.text)
    ]
    assert stop_index(tokens, ids[VISION_END], ids[IM_END]) == len(tokens) - 1
    start, end = answer_span(tokens, ids[VISION_START], ids[VISION_END], ids[IM_END])
    assert tokens[start:end] == [ids[IMAGE_PAD]] and start == len(tokens) - 3


# ----------------------------------------------------------------------------------------------------------
# The example, in both forms


def test_example_text_is_exactly_the_documented_one() -> None:
    assert example().to_text() == EXAMPLE_TEXT
    assert Trajectory.from_text(EXAMPLE_TEXT, example().images) == example()


def test_example_json_document_names_its_pngs_in_image_order() -> None:
    document, pngs = example().to_json()
    assert document["steps"][1] == {"kind": "sketch", "image": "00.png"}
    assert document["steps"][2] == {
        "kind": "inspect",
        "text": example().steps[2].text,
        "refine": "Move it left.",
    }
    assert document["steps"][3]["plan"] == {
        "ins": "Move the red square to the left.",
        "des": "A red square on the left.",
    }
    assert list(pngs) == ["00.png", "01.png", "02.png"]
    assert example().answer == image("blue")


def test_save_and_load_a_directory(tmp_path) -> None:
    editing = Trajectory("make it blue", [Plan("Recolour.", "Blue."), Sketch(image("blue"))], image("red"))
    directory = editing.save(tmp_path / "sample")
    assert sorted(p.name for p in directory.iterdir()) == ["00.png", "01.png", "trajectory.json"]
    assert Trajectory.load(directory) == editing
    assert editing.to_text().startswith(
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>make it blue"
    )


def test_a_webdataset_shard_round_trips(tmp_path) -> None:
    import webdataset as wds

    editing = Trajectory(
        "make it grey", [Plan("Recolour.", "Grey."), Sketch(image(90, "L"))], image("red", "RGBA")
    )
    shard = str(tmp_path / "shard-000000.tar")
    with wds.TarWriter(shard) as sink:
        sink.write({"__key__": "000000", **example().to_files()})
        sink.write({"__key__": "000001", **editing.to_files()})
    raw = [Trajectory.from_files(sample) for sample in wds.WebDataset(shard, shardshuffle=False)]
    assert raw == [example(), editing]
    # `.decode("pil")` converts every image to RGB: exact only for RGB trajectories.
    decoded = next(iter(wds.WebDataset(shard, shardshuffle=False).decode("pil")))
    assert Trajectory.from_files(decoded) == example()


def test_load_names_the_directory(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrajectoryError, match=r"no trajectory.json among the files \[\] \(in .*empty\)"):
        Trajectory.load(empty)


def test_images_lose_their_metadata_and_file_class() -> None:
    tagged = image("red")
    tagged.info["dpi"] = (72, 72)
    assert Sketch(tagged) == Sketch(image("red"))
    assert Sketch(tagged).image is not tagged


# ----------------------------------------------------------------------------------------------------------
# Malformed tagged text: each case names the offset of its problem


def _offset_of(text: str, needle: str, occurrence: int = 1) -> int:
    offset = -1
    for _ in range(occurrence):
        offset = text.index(needle, offset + 1)
    return offset


MALFORMED = {
    # name: (original, replacement, the substring of the broken text where the error is, its occurrence)
    "unclosed ins": (
        "<ins>Add a blue circle on the right.</ins>",
        "<ins>Add a blue circle</des>",
        "<ins>Add a b",
        1,
    ),
    "unclosed refine": ("Move it left.</refine>", "Move it left.<|im_end|>", "<refine>", 1),
    "unclosed vision": ("<|image_pad|><|vision_end|><|im_end|>", "<|image_pad|><|im_end|>", VISION_START, 3),
    "nested ins": ("<ins>Draw a red", "<ins>Draw <ins>a red", "<ins>a red", 1),
    "des inside refine": ("<refine>Move it left.", "<refine>Move <des>it left.", "<des>it", 1),
    "vision inside des": (
        "background.</des>",
        "background.<|vision_start|></des>",
        "<|vision_start|></des>",
        1,
    ),
    "unknown tag": ("a red square.</ins>", "a <b>red</b> square.</ins>", "<b>", 1),
    "unknown special token": ("<|im_end|>\n<|im_start|>assistant", "<|endoftext|>", "<|endoftext|>", 1),
    "text between the last image and im_end": (
        "<|vision_end|><|im_end|>",
        "<|vision_end|>Looks done.<|im_end|>",
        "Looks done.",
        1,
    ),
    "text between des and its image": ("background.</des>", "background.</des>\n", "\n<|vision_start|>", 1),
    "text between ins and des": ("red square.</ins>", "red square.</ins> ", " <des>", 1),
    "text after refine": ("Move it left.</refine>", "Move it left.</refine>Then.", "Then.", 1),
    "image between steps": ("<ins>Add a blue", "<|image_pad|><ins>Add a blue", "<|image_pad|><ins>", 1),
    "image in the prompt": ("a blue circle<|im_end|>", "a blue circle<|image_pad|><|im_end|>", IMAGE_PAD, 1),
    "image inside ins": ("<ins>Draw a red", "<ins>Draw <|image_pad|>a red", IMAGE_PAD, 1),
    "text inside vision markers": (
        "<|vision_start|><|image_pad|><|vision_end|><|im_end|>",
        "<|vision_start|> <|image_pad|>",
        " <|image",
        1,
    ),
    "two images in one vision block": (
        "<|image_pad|><|vision_end|><ins>Add",
        "<|image_pad|><|image_pad|>",
        IMAGE_PAD,
        3,
    ),
    "closing tag with no opening": (
        "<ins>Draw a red square.</ins>",
        "</ins>",
        "</ins><des>A red square on a",
        1,
    ),
    "vision end with no start": (
        "<|vision_start|><|image_pad|><|vision_end|><ins>Add",
        "<|vision_end|><ins>Add",
        "<|vision_end|><ins>Add",
        1,
    ),
    "steps that do not start with a plan": (
        "assistant\n<ins>Draw",
        "assistant\nHello.<ins>Draw",
        "Hello.",
        1,
    ),
    "image right after an inspect without refine": (
        "<refine>Move it left.</refine><ins>Move the red square to the left.</ins>"
        "<des>A red square on the left.</des>",
        "",
        VISION_START,
        2,
    ),
    "wrong role word": ("<|im_start|>user\n", "<|im_start|>system\n", "system", 1),
    "text after the final im_end": ("<|vision_end|><|im_end|>", "<|vision_end|><|im_end|>more", "more", 1),
    "empty prompt": ("a red square left of a blue circle<|im_end|>", "<|im_end|>", "<|im_end|>\n", 1),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_text_names_the_offset(name: str) -> None:
    original, replacement, where, occurrence = MALFORMED[name]
    assert EXAMPLE_TEXT.count(original) == 1, "the edit must be unambiguous"
    broken = EXAMPLE_TEXT.replace(original, replacement)
    with pytest.raises(TrajectoryError) as caught:
        Trajectory.from_text(broken, example().images)
    assert caught.value.offset == _offset_of(broken, where, occurrence), str(caught.value)
    assert str(caught.value).startswith(f"at offset {caught.value.offset}: ")


def test_missing_final_im_end_is_reported_at_the_end() -> None:
    broken = EXAMPLE_TEXT.removesuffix(IM_END)
    with pytest.raises(TrajectoryError, match="ends between steps") as caught:
        Trajectory.from_text(broken, example().images)
    assert caught.value.offset == len(broken)


def test_refine_without_a_corrected_image_is_reported_where_the_steps_end() -> None:
    broken = EXAMPLE_TEXT.split("<ins>Move the red")[0] + IM_END
    with pytest.raises(TrajectoryError, match="<refine> has no Refine") as caught:
        Trajectory.from_text(broken, example().images[:1])
    assert caught.value.offset == broken.index("The square is")


def test_placeholders_and_images_must_pair_up() -> None:
    with pytest.raises(TrajectoryError, match=r"images\[2\]: 2 images given") as caught:
        Trajectory.from_text(EXAMPLE_TEXT, example().images[:2])
    assert caught.value.offset == _offset_of(EXAMPLE_TEXT, IMAGE_PAD, 3)
    with pytest.raises(TrajectoryError, match="4 images given for 3") as caught:
        Trajectory.from_text(EXAMPLE_TEXT, [*example().images, image("black")])
    assert caught.value.path == "images"


# ----------------------------------------------------------------------------------------------------------
# Building steps and trajectories in Python


@pytest.mark.parametrize(
    ("build", "path", "message"),
    [
        (lambda: Plan("Add <ins> here", "x"), "ins", "'<ins>' at position 4"),
        (lambda: Plan("x", "ends <|im_end|>"), "des", "'<|im_end|>'"),
        (lambda: Inspect("looks like <b>bold</b>"), "text", "'<b>'"),
        (lambda: Inspect(""), "text", "needs critique text or a refine"),
        (lambda: Sketch(Image.new("CMYK", (2, 2))), "image", "mode 'CMYK'"),
        (lambda: Sketch("red.png"), "image", "expected a PIL image"),
        (lambda: Refine(("ins", "des"), image("red")), "plan", "expected a Plan"),
    ],
)
def test_step_fields_are_checked(build, path: str, message: str) -> None:
    with pytest.raises(TrajectoryError, match=message) as caught:
        build()
    assert caught.value.path == path


def steps_with(*middle) -> list:
    return [Plan("a", "b"), Sketch(image("red")), *middle]


@pytest.mark.parametrize(
    ("steps", "path", "message"),
    [
        (
            steps_with(Refine(Plan("c", "d"), image("blue"))),
            "$.steps[2]",
            "a Refine must follow an Inspect with <refine>, not a Sketch",
        ),
        (
            steps_with(Inspect("fine"), Refine(Plan("c", "d"), image("blue"))),
            "$.steps[3]",
            "a Refine must follow an Inspect with <refine>, not an Inspect",
        ),
        (
            steps_with(Inspect("off", "fix"), Plan("c", "d"), Sketch(image("blue"))),
            "$.steps[3]",
            "after an Inspect with <refine> comes the Refine, not a Plan",
        ),
        (
            steps_with(Sketch(image("blue"))),
            "$.steps[2]",
            "after an image comes a Plan or an Inspect, not a Sketch",
        ),
        (steps_with(Inspect("ok"), Inspect("still ok")), "$.steps[3]", "after an Inspect without <refine>"),
        (steps_with(Plan("c", "d")), "$.steps[2]", "the last Plan has no Sketch"),
        (steps_with(Inspect("ok")), "$.steps[2]", "the steps end with an Inspect"),
        ([Inspect("ok")], "$.steps[0]", "a trajectory starts with a Plan .*, not an Inspect"),
        ([Sketch(image("red")), Plan("a", "b")], "$.steps[1]", "drawn in one pass and has no other step"),
        ([], "$.steps", "needs at least one Plan"),
        (steps_with("an image"), "$.steps[2]", "got str"),
    ],
)
def test_step_order_is_checked(steps: list, path: str, message: str) -> None:
    with pytest.raises(TrajectoryError, match=message) as caught:
        Trajectory("prompt", steps)
    assert caught.value.path == path


def test_prompt_is_checked() -> None:
    with pytest.raises(TrajectoryError, match="empty"):
        Trajectory("", steps_with())
    with pytest.raises(TrajectoryError, match="tag-like") as caught:
        Trajectory("draw <des>", steps_with())
    assert caught.value.path == "$.prompt"


# ----------------------------------------------------------------------------------------------------------
# Malformed JSON documents: each case names the JSON path


def _document() -> dict:
    return example().to_json()[0]


def _with(change) -> dict:
    document = _document()
    change(document)
    return document


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [
        (_with(lambda d: d.update(format="pdgen.trajectory/0")), "$.format", "expected 'pdgen.trajectory/1'"),
        (_with(lambda d: d.pop("prompt")), "$.prompt", "missing"),
        (_with(lambda d: d.update(extra=1)), "$.extra", "unknown key"),
        (_with(lambda d: d.update(steps={})), "$.steps", "expected a list, got an object"),
        (_with(lambda d: d["steps"][3].update(image="09.png")), "$.steps[3].image", "no image file '09.png'"),
        (_with(lambda d: d["steps"][1].update(image=1)), "$.steps[1].image", "expected an image file name"),
        (_with(lambda d: d["steps"][0].update(ins=None)), "$.steps[0].ins", "expected a string, got null"),
        (_with(lambda d: d["steps"][0].update(ins="<ins>")), "$.steps[0].ins", "tag-like"),
        (_with(lambda d: d["steps"][3]["plan"].pop("des")), "$.steps[3].plan.des", "missing"),
        (_with(lambda d: d["steps"][4].update(kind="paint")), "$.steps[4].kind", "unknown step kind 'paint'"),
        (
            _with(lambda d: d["steps"][2].update(text="", refine=None)),
            "$.steps[2].text",
            "needs critique text",
        ),
        (
            _with(lambda d: d["steps"][2].update(refine=None)),
            "$.steps[3]",
            "a Refine must follow an Inspect with",
        ),
        (_with(lambda d: d["steps"].pop(2)), "$.steps[2]", "a Refine must follow"),
        ([], "$", "expected an object, got a list"),
    ],
)
def test_malformed_json_names_the_path(document, path: str, message: str) -> None:
    with pytest.raises(TrajectoryError, match=message) as caught:
        Trajectory.from_json(document, example().to_json()[1])
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")


def test_unreadable_png_and_bad_json_bytes_are_named() -> None:
    files = example().to_files()
    with pytest.raises(TrajectoryError, match="01.png is not a readable PNG") as caught:
        Trajectory.from_files(files | {"01.png": b"not a png"})
    assert caught.value.path == "$.steps[3].image"
    with pytest.raises(TrajectoryError, match="not valid JSON") as caught:
        Trajectory.from_files(files | {"trajectory.json": b"{"})
    assert caught.value.path == "trajectory.json"


# ----------------------------------------------------------------------------------------------------------
# The stop rule

VE, IE, VS = 151653, 151645, 151652  # Qwen2.5's <|vision_end|>, <|im_end|>, <|vision_start|>


def test_im_end_after_text_does_not_stop() -> None:
    assert stop_index([1, 2, IE, VS, 9, VE, 3, IE], VE, IE) is None


def test_im_end_right_after_vision_end_stops_and_the_last_image_is_the_answer() -> None:
    tokens = [1, VS, 7, VE, 2, IE, VS, 8, 8, VE, IE, 5]
    assert stop_index(tokens, VE, IE) == 10
    assert answer_span(tokens, VS, VE, IE) == (7, 9)
    assert answer_span(tokens[:10], VS, VE, IE) is None


def test_answer_without_vision_start_is_an_error() -> None:
    with pytest.raises(TrajectoryError) as caught:
        answer_span([1, VE, IE], VS, VE, IE)
    assert caught.value.offset == 1


def test_stop_offset_on_partial_text() -> None:
    partial = EXAMPLE_TEXT.removesuffix(IM_END)
    assert stop_offset(partial) is None
    assert stop_offset(EXAMPLE_TEXT) == len(EXAMPLE_TEXT) - len(IM_END)
