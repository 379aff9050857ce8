"""The prediction writer: GenEval's layout with trajectories beside it, resumable, summarised."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from world_packs import embedded_packing

from pdgen.data.prompts import PredictRequest, PromptsDataModule
from pdgen.data.tokenizer import save_tokenizer
from pdgen.eval.samples import read_prompt_folders
from pdgen.inference import GenerationConfig, Script, generate
from pdgen.lit.predict import Prediction
from pdgen.lit.writer import PredictionWriter, write_summary
from pdgen.models.bagel import BagelConfig, BagelTrunk
from pdgen.trajectory import IM_END, VISION_START, Trajectory

PLAN = "<ins>Add a green triangle.</ins><des>A green triangle.</des>"
ROW = {
    "tag": "single_object",
    "include": [{"class": "triangle", "count": 1}],
    "prompt": "a photo of a triangle",
}


@pytest.fixture(scope="module")
def predictions(world_packs) -> list[Prediction]:
    """Three samples of one prompt: a valid trajectory, a single pass, and a generation that drew nothing
    (a random model that never closes its plan within the text budget)."""
    torch.manual_seed(0)
    trunk = BagelTrunk(BagelConfig.from_name("embedded")).eval()
    packing, tokenizer = embedded_packing(16), world_packs.tokenizer
    process = GenerationConfig.from_name("tiny", num_timesteps=3, image_size=(16, 16), max_text_tokens=4)
    single = dataclasses.replace(process, mode="single_pass")
    drawn = Script(decisions=[VISION_START, IM_END], texts=[PLAN])
    runs = [
        generate(trunk, tokenizer, ROW["prompt"], process, 1, packing, controller=drawn),
        generate(trunk, tokenizer, ROW["prompt"], single, 2, packing),
        generate(trunk, tokenizer, ROW["prompt"], process, 3, packing),
    ]
    return [
        Prediction(
            PredictRequest(0, k, ROW["prompt"], ROW, g.seed), g, ("process", "single_pass")[k == 1], "model"
        )
        for k, g in enumerate(runs)
    ]


def test_the_layout_is_genevals_with_trajectories_beside_it(predictions, tmp_path):
    for prediction in predictions:
        PredictionWriter.write(tmp_path, prediction)
    (folder,) = read_prompt_folders(tmp_path)  # what `pdgen eval geneval` and the official scorer read
    assert folder.metadata == ROW
    assert [p.name for p in folder.images] == ["0000.png", "0001.png", "0002.png"]

    steps = tmp_path / "00000" / "trajectory"
    trajectory = Trajectory.load(steps / "0000")
    assert trajectory.steps[0].ins == "Add a green triangle."
    generation = json.loads((steps / "0000" / "generation.json").read_text())
    assert generation["stop_reason"] == "stop_token" and generation["final_image"] == "00.png"
    costs = json.loads((steps / "0000" / "costs.json").read_text())
    assert costs["seed"] == 1 and costs["mode"] == "process" and costs["images"] == 1

    assert not (steps / "0001" / "trajectory.json").exists()  # single pass: images and text, no trajectory
    assert (steps / "0001" / "00.png").is_file()
    assert json.loads((steps / "0001" / "costs.json").read_text())["mode"] == "single_pass"

    nothing = json.loads((steps / "0002" / "generation.json").read_text())
    assert nothing["final_image"] is None and nothing["stop_reason"] == "max_text_tokens"
    assert nothing["error"] is not None  # the cut text is kept and the reason named


def test_a_sample_that_drew_nothing_scores_as_a_blank_image(predictions, tmp_path):
    PredictionWriter.write(tmp_path, predictions[2])
    image = read_prompt_folders(tmp_path)[0].images[0]
    assert Image.open(image).getextrema() == ((255, 255),) * 3


def test_the_summary_covers_every_sample_on_disk(predictions, tmp_path):
    for prediction in predictions:
        PredictionWriter.write(tmp_path, prediction)
    summary = write_summary(tmp_path)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["prompts"] == 3 and summary["total_images"] == 2
    assert summary["total_sampling_steps"] == 6  # two images of three steps: the paper's inference cost


def test_a_run_into_a_folder_of_another_prompt_set_is_refused(predictions, world_packs, tmp_path):
    PredictionWriter.write(tmp_path, predictions[0])
    data = PromptsDataModule(
        "shapes:train:1",
        samples_per_prompt=2,
        tokenizer=save_tokenizer(world_packs.tokenizer, tmp_path / "tok"),
    )
    data.setup("predict")
    assert data.records[0].metadata != ROW  # its prompt 0 is not the one in the folder
    trainer = SimpleNamespace(datamodule=data, default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match="holds another prompt set"):
        PredictionWriter().setup(trainer, None, "predict")


def test_samples_already_on_disk_are_left_out_of_the_run(predictions, world_packs, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps(ROW) + "\n")
    PredictionWriter.write(tmp_path / "out", predictions[0])
    data = PromptsDataModule(
        str(prompts), samples_per_prompt=2, tokenizer=save_tokenizer(world_packs.tokenizer, tmp_path / "tok")
    )
    data.setup("predict")
    PredictionWriter(tmp_path / "out").setup(SimpleNamespace(datamodule=data), None, "predict")
    assert [(r.index, r.sample) for r in data.requests] == [(0, 1)]


def test_an_edit_keeps_its_input_image_first_beside_what_was_drawn(world_packs, tmp_path, capsys):
    from pdgen.commands.view import html

    torch.manual_seed(0)
    trunk = BagelTrunk(BagelConfig.from_name("embedded")).eval()
    packing, tokenizer = embedded_packing(16), world_packs.tokenizer
    config = GenerationConfig.from_name("tiny", num_timesteps=3, image_size=(16, 16), max_text_tokens=4)
    source = Image.new("RGB", (16, 16), (200, 30, 30))
    source.save(tmp_path / "input.png")
    prompt = "Remove the red square."
    scripted = Script(decisions=[VISION_START, IM_END], texts=[PLAN])
    runs = [  # a valid trajectory, and a random model's text cut short (no trajectory)
        generate(trunk, tokenizer, prompt, config, 1, packing, controller=scripted, input_image=source),
        generate(trunk, tokenizer, prompt, config, 2, packing, input_image=source),
    ]
    row = {"prompt": prompt, "image": "input.png"}
    out = tmp_path / "out"
    for k, generation in enumerate(runs):
        request = PredictRequest(0, k, prompt, row, generation.seed, tmp_path / "input.png")
        PredictionWriter.write(out, Prediction(request, generation, "process", "model"))
    traced, untraced = (out / "00000" / "trajectory" / f"000{k}" for k in range(2))
    assert Trajectory.load(traced).input_image.tobytes() == source.tobytes()
    for sample in (traced, untraced):
        record = json.loads((sample / "generation.json").read_text())
        assert record["input_image"] == "00.png"
        assert Image.open(sample / "00.png").tobytes() == source.tobytes()
    assert json.loads((traced / "generation.json").read_text())["final_image"] == "01.png"

    page = (tmp_path / "page.html")
    html(out, out=page)
    for section in page.read_text().split("<section>")[1:]:  # the input first, after the prompt
        figures = section.split("<figcaption>")
        assert figures[1].startswith("input</figcaption>")
