"""The prediction set: prompt sources, per-sample seeds, the tokenizer's origin, generation options."""

import json

import pytest
from PIL import Image

from pdgen.data.prompts import PredictRequest, PromptsDataModule, read_prompts, sample_seed
from pdgen.data.tokenizer import save_tokenizer
from pdgen.errors import UserError
from pdgen.inference import ModelDecides
from pdgen.inference.baselines import ExternalInspector, ExternalPlanner


def test_a_text_file_is_one_prompt_per_line_blank_lines_skipped(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\n\n  a blue square  \n")
    records = read_prompts(path)
    assert [(r.index, r.prompt, r.metadata) for r in records] == [
        (0, "a red circle", {"prompt": "a red circle"}),
        (1, "a blue square", {"prompt": "a blue square"}),
    ]


def test_a_jsonl_keeps_each_object_as_the_metadata(tmp_path):
    row = {
        "tag": "single_object",
        "include": [{"class": "circle", "count": 1}],
        "prompt": "a photo of a circle",
    }
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (record,) = read_prompts(path)
    assert record.prompt == "a photo of a circle" and record.metadata == row


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.jsonl", '{"prompt": "ok"}\n{"prompt": 3}\n', r"p\.jsonl, line 2: expected a non-empty 'prompt'"),
        ("p.jsonl", '{"prompt": "ok"}\n\nnot json\n', r"p\.jsonl, line 3: not valid JSON"),
        ("p.jsonl", '["a list"]\n', r"p\.jsonl, line 1: expected a JSON object"),
        ("p.txt", "fine\na <ins> tag\n", r"p\.txt, line 2: .*tag-like string '<ins>'"),
        ("p.txt", "\n\n", r"holds no prompt"),
        ("p.csv", "a,b\n", r"expected a \.txt .* or a \.jsonl"),
    ],
)
def test_bad_lines_name_the_file_and_the_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_prompts(path)


def test_an_image_key_makes_the_prompt_an_edit_of_that_image(tmp_path):
    Image.new("RGB", (32, 32), "grey").save(tmp_path / "input.png")
    path = tmp_path / "cases.jsonl"
    edit = '{"prompt": "Remove the red circle.", "image": "input.png"}'
    path.write_text(edit + '\n{"prompt": "a red circle"}\n')
    edit, plain = read_prompts(path)
    assert edit.image == tmp_path / "input.png" and plain.image is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "Remove it.", "image": "missing.png"}', r"line 2: the input image .*missing\.png does"),
        ('{"prompt": "Remove it.", "image": "broken.png"}', r"c\.jsonl, line 2: the input image cannot be"),
        ('{"prompt": "Remove it.", "image": 7}', r"c\.jsonl, line 2: expected 'image' to be a path"),
    ],
)
def test_a_missing_or_unreadable_input_image_names_the_line(tmp_path, line, message):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    path = tmp_path / "c.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_prompts(path)
    with pytest.raises(UserError, match=message):  # `pdgen predict` prints it without a traceback
        PromptsDataModule(str(path), tokenizer=str(tmp_path)).setup("predict")


def test_the_builtin_shapes_eval_split_needs_no_file():
    records = read_prompts("shapes:test:2")
    assert len(records) == 11  # two of each of GenEval's six tags; the default world's test split has one
    # single-object prompt (three classes, split between train and test)
    assert len({r.metadata["tag"] for r in records}) == 6
    assert all(r.metadata["prompt"] == r.prompt for r in records)
    with pytest.raises(ValueError, match="SPLIT one of train, test"):
        read_prompts("shapes:val")
    with pytest.raises(ValueError, match="PER_TAG a positive integer"):
        read_prompts("shapes:test:many")


def test_seeds_depend_on_run_seed_prompt_and_sample_only():
    seeds = {sample_seed(s, i, k) for s in range(2) for i in range(3) for k in range(3)}
    assert len(seeds) == 18
    assert sample_seed(0, 5, 1) == sample_seed(0, 5, 1)


def test_requests_are_every_sample_of_every_prompt_and_can_skip_done_ones(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path / "tok")
    data = PromptsDataModule("shapes:test:1", samples_per_prompt=2, limit=2, tokenizer=str(tmp_path / "tok"))
    data.setup("predict")
    keys = [(r.index, r.sample) for r in data.requests]
    assert keys == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert data.requests[1].seed == sample_seed(0, 0, 1)
    data.skip({(0, 0), (1, 1)})
    assert [(r.index, r.sample) for r in data.predict_dataloader()] == [(0, 1), (1, 0)]


def test_the_tokenizer_comes_from_the_training_shard_set_or_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer: pass data.tokenizer"):
        PromptsDataModule("shapes:test:1").setup("predict")
    with pytest.raises(ValueError, match="no shard set in data.root"):
        PromptsDataModule("shapes:test:1", root=str(tmp_path)).setup("predict")


def test_generation_options_live_on_the_data_module():
    data = PromptsDataModule("shapes:test", mode="single_pass", generation_overrides={"num_timesteps": 7})
    config = data.generation_config
    assert config.mode == "single_pass" and config.num_timesteps == 7
    side = data.packing_config.vae_max_size
    assert config.image_size == (side, side)  # the largest the packing allows, unless given
    with pytest.raises(ValueError, match="num_timesteps=1 must be at least 2"):
        PromptsDataModule("shapes:test", generation_overrides={"num_timesteps": 1})
    with pytest.raises(ValueError, match="not both"):
        PromptsDataModule("shapes:test", baseline="planner", interactive=True)


def test_each_request_gets_a_fresh_controller_of_the_chosen_kind():
    data = PromptsDataModule("shapes:test:1")
    records = read_prompts("shapes:test:1")
    request = PredictRequest(0, 0, records[1].prompt, records[1].metadata, 0)
    assert isinstance(data.controller(request), ModelDecides)
    planner = PromptsDataModule("shapes:test:1", baseline="planner")
    assert isinstance(planner.controller(request), ExternalPlanner)
    assert planner.controller(request) is not planner.controller(request)
    assert planner.generation_config.inspect is False  # plans follow images directly, as in training
    inspector = PromptsDataModule("shapes:test:1", baseline="inspector")
    assert isinstance(inspector.controller(request), ExternalInspector)
    assert inspector.controller_name == "inspector"
