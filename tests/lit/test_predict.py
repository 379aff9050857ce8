"""`pdgen predict` in-process on a one-step checkpoint: the shipped configs, EMA weights, resuming."""

import json
import re

import pytest
import torch
import yaml
from PIL import Image
from world_packs import FROM_SCRATCH, IN_THIS_PROCESS

from pdgen.cli import main
from pdgen.data.tokenizer import save_tokenizer
from pdgen.lit.module import ScheduleConfig
from pdgen.lit.predict import load_ema_weights

PROMPTS = ["a photo of a red circle left of a blue square", "a photo of a green triangle"]


@pytest.fixture(scope="module")
def checkpoint(world_packs, tmp_path_factory):
    """(last.ckpt, tokenizer dir) of a one-step `pdgen fit -c configs/full.yaml` on the in-memory world packs.

    Fitted through the CLI on purpose: LightningCLI records the model's class path in the checkpoint, and
    `pdgen predict --ckpt_path` needs it to read the hyperparameters back.
    """
    root = tmp_path_factory.mktemp("fit")
    main(
        [
            "fit",
            "-c",
            "configs/full.yaml",
            "--data",
            "world_packs.WorldPacks",
            *FROM_SCRATCH,
            *IN_THIS_PROCESS,
            "--model.init_args.schedule.warmup_steps",
            "1",
            "--trainer.max_steps",
            "1",
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(root),
        ]
    )
    # WorldPacks trains its tokenizer deterministically: the fixture's is the one the fit used.
    return root / "checkpoints" / "last.ckpt", save_tokenizer(world_packs.tokenizer, root / "tokenizer")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny-model generation is many small forward passes: one thread is several times faster on a shared
    2-core machine (docs/inference.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def predict(ckpt, tokenizer, prompts, out, *extra):
    main(
        [
            "predict",
            "-c",
            "configs/full.yaml",
            "-c",
            "configs/predict.yaml",
            "--ckpt_path",
            str(ckpt),
            "--data.path",
            str(prompts),
            "--data.tokenizer",
            str(tokenizer),
            "--data.samples_per_prompt",
            "1",
            "--data.generation_overrides",
            '{"num_timesteps": 3, "max_text_tokens": 4, "max_images": 2}',
            "--trainer.default_root_dir",
            str(out),
            "--trainer.enable_progress_bar",
            "false",
            *extra,
        ]
    )


def test_predict_writes_every_prompt_then_resumes_without_redoing_any(checkpoint, tmp_path):
    ckpt, tokenizer = checkpoint
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    # The world planner writes the plans, so the random model draws images through the whole CLI path.
    predict(ckpt, tokenizer, prompts, out, "--data.baseline", "planner", "--data.limit", "1")
    sample = out / "00000" / "trajectory" / "0000"
    assert json.loads((out / "00000" / "metadata.jsonl").read_text()) == {"prompt": PROMPTS[0]}
    generation = json.loads((sample / "generation.json").read_text())
    assert generation["controller"] == "planner" and generation["stop_reason"] == "max_images"
    assert (sample / "01.png").is_file() and (out / "00000" / "samples" / "0000.png").is_file()
    assert (out / "config.yaml").is_file()  # LightningCLI's record of the run, beside the samples
    first = (sample / "costs.json").read_bytes()

    predict(ckpt, tokenizer, prompts, out, "--data.mode", "single_pass")
    assert (sample / "costs.json").read_bytes() == first  # done before: not redone
    assert (
        json.loads((out / "00001" / "trajectory" / "0000" / "costs.json").read_text())["mode"]
        == "single_pass"
    )
    assert json.loads((out / "summary.json").read_text())["prompts"] == 2


def test_a_checkpoint_with_the_flat_arguments_of_old_still_predicts(checkpoint, tmp_path):
    ckpt, tokenizer = checkpoint
    old = torch.load(ckpt, weights_only=True)
    hparams = old["hyper_parameters"]
    schedule, lora = hparams.pop("schedule"), hparams.pop("lora")
    hparams.update(warmup_steps=schedule["warmup_steps"], min_lr_ratio=0.3, schedule_steps=schedule["steps"])
    hparams.update({f"lora_{name}": value for name, value in lora.items()})
    torch.save(old, tmp_path / "old.ckpt")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[1] + "\n")
    out = tmp_path / "out"
    predict(tmp_path / "old.ckpt", tokenizer, prompts, out, "--data.mode", "single_pass")
    assert (out / "00000" / "samples" / "0000.png").is_file()
    recorded = yaml.safe_load((out / "config.yaml").read_text())["model"]["init_args"]
    assert recorded["schedule"]["min_lr_ratio"] == 0.3  # the checkpoint's value, read into its group


def test_the_checkpoints_ema_average_replaces_the_raw_weights(checkpoint, make_module):
    ckpt, _ = checkpoint
    module = make_module(schedule=ScheduleConfig(warmup_steps=1))
    raw = torch.load(ckpt, weights_only=True)
    module.load_state_dict(raw["state_dict"])
    shadow = raw["callbacks"]["EMA"]["shadow"]
    name = next(n for n in shadow if not torch.equal(shadow[n], raw["state_dict"][n]))  # moved by the step
    assert load_ema_weights(module, ckpt)
    assert torch.equal(dict(module.named_parameters())[name].detach(), shadow[name])


def test_a_failed_predict_leaves_the_prediction_folder_byte_identical(checkpoint, tmp_path, capsys):
    ckpt, tokenizer = checkpoint
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS[0] + "\n")
    out = tmp_path / "out"
    predict(ckpt, tokenizer, prompts, out, "--data.baseline", "planner")
    assert re.search(r"^predict: 1 batches in \d+s$", capsys.readouterr().err, flags=re.M)  # no bar: lines

    def contents() -> dict[str, bytes]:
        return {str(path.relative_to(out)): path.read_bytes() for path in out.rglob("*") if path.is_file()}

    before = contents()
    assert "config.yaml" in before
    # A checkpoint that is not there: a short error naming it and what its folder holds, nothing written.
    with pytest.raises(SystemExit) as failed:
        predict(ckpt.with_name("typo.ckpt"), tokenizer, prompts, out, "--trainer.max_steps", "7")
    message = str(failed.value.code)
    assert message.startswith(f"pdgen predict: checkpoint {ckpt.with_name('typo.ckpt')} not found.\n")
    assert "last.ckpt" in message and len(message.splitlines()) <= 3
    assert contents() == before
    # One whose weights do not fit the model fails after setup, where LightningCLI wrote its config.yaml.
    mismatched = torch.load(ckpt, weights_only=False)
    mismatched["state_dict"].popitem()
    torch.save(mismatched, tmp_path / "mismatched.ckpt")
    with pytest.raises(RuntimeError, match="state_dict"):
        predict(tmp_path / "mismatched.ckpt", tokenizer, prompts, out, "--trainer.max_steps", "7")
    assert contents() == before


@pytest.mark.slow
def test_predict_edits_the_input_images_of_a_cases_file_and_eval_edits_scores_them(
    checkpoint, tmp_path, capsys
):
    ckpt, tokenizer = checkpoint
    main(["eval", "edit-cases", "--out", str(tmp_path / "cases"), "--per_type", "1"])
    out = tmp_path / "out"
    predict(ckpt, tokenizer, tmp_path / "cases" / "cases.jsonl", out, "--data.limit", "2")
    for index in range(2):
        sample = out / f"{index:05d}" / "trajectory" / "0000"
        assert json.loads((sample / "generation.json").read_text())["input_image"] == "00.png"
        source = tmp_path / "cases" / "inputs" / f"{index:05d}.png"
        assert Image.open(sample / "00.png").tobytes() == Image.open(source).convert("RGB").tobytes()
    capsys.readouterr()
    main(["eval", "edits", "--images", str(out)])
    assert "recolor" in capsys.readouterr().out  # a random model's edits, scored (wrong, most likely)
    # A case whose input image went missing: a short error naming the line, before any model is built.
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "Remove the red circle.", "image": "gone.png"}\n')
    message = r"^pdgen predict: .*broken\.jsonl, line 1: the input image .*gone\.png does not exist"
    with pytest.raises(SystemExit, match=message):
        predict(ckpt, tokenizer, broken, tmp_path / "other")
