"""Every shipped config parses with `pdgen fit --print_config` in-process, and the recipe's ablations change
only what their table row says."""

import contextlib
import functools
import io
from pathlib import Path

import pytest
import yaml

from pdgen.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
RECIPE = "configs/full.yaml"
"""The full recipe, what the ablations compose over."""


@functools.cache
def resolved(*files: str, command: str = "fit") -> dict:
    """The configuration `pdgen fit -c F1 -c F2 ... --print_config` prints, as a dict (each parsed once: a
    parse costs a second or two here)."""
    printed = io.StringIO()
    with pytest.raises(SystemExit) as exited, contextlib.redirect_stdout(printed):
        main([command, *(arg for f in files for arg in ("-c", str(ROOT / f))), "--print_config"])
    assert exited.value.code in (0, None)
    return yaml.safe_load(printed.getvalue())


def layering(config: str) -> tuple[str, ...]:
    """How a config is meant to be used: layered over the recipe (configs/full.yaml), or the recipe itself."""
    return (RECIPE,) if config == RECIPE else (RECIPE, config)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_shipped_config_parses(config):
    command = "predict" if Path(config).stem.startswith("predict") else "fit"  # configs/predict.yaml
    printed = resolved(*layering(config), command=command)
    assert printed["model"]["class_path"].endswith("ProcessDrivenModule")


def weights(printed: dict) -> dict:
    return printed["data"]["init_args"]["weights"]


def subset(printed: dict, name: str) -> dict:
    return printed["data"]["init_args"]["subsets"][name]["init_args"]


def test_the_recipe_mixes_the_three_subsets_like_the_paper():
    """The paper's 2 / 1 / 1 among samples with images; as many multi-turn samples again as plan text."""
    printed = resolved(RECIPE)
    assert printed["data"]["class_path"].endswith("MixtureDataModule")
    assert weights(printed) == {"multiturn": 4.0, "conflict": 1.0, "alignment": 1.0}
    assert printed["data"]["init_args"]["reader"]["plan_text"] == 0.5
    assert subset(printed, "multiturn")["build"]["augment"] == 0.0  # additive steps only (docs/results.md)
    assert subset(printed, "conflict")["from_ckpt"] == "runs/full/stage1/checkpoints/last.ckpt"


@pytest.mark.parametrize(
    ("ablation", "expected", "augment", "from_ckpt"),
    [
        ("table5_no_augment", {"multiturn": 1.0, "conflict": 0.0, "alignment": 0.0}, 0.0, "stage1-noaug"),
        ("table5_no_augment_critique", {"multiturn": 4.0, "conflict": 1.0, "alignment": 1.0}, 0.0,
         "stage1-noaug"),
        ("table5_augment", {"multiturn": 1.0, "conflict": 0.0, "alignment": 0.0}, 0.2, "stage1-aug"),
        ("table5_augment_critique", {"multiturn": 4.0, "conflict": 1.0, "alignment": 1.0}, 0.2, "stage1-aug"),
        ("table6_symbolic", {"multiturn": 4.0, "conflict": 1.0, "alignment": 0.0}, 0.0, "symbolic"),
        ("table7_multiturn_only", {"multiturn": 1.0, "conflict": 0.0, "alignment": 0.0}, 0.0, "stage1/"),
        ("table7_with_conflict", {"multiturn": 4.0, "conflict": 1.0, "alignment": 0.0}, 0.0, "stage1/"),
        ("table7_with_alignment", {"multiturn": 4.0, "conflict": 0.0, "alignment": 1.0}, 0.0, "stage1/"),
    ],
)  # fmt: skip
def test_each_ablation_changes_its_row_and_keeps_the_rest(ablation, expected, augment, from_ckpt):
    printed = resolved(RECIPE, f"configs/ablations/{ablation}.yaml")
    assert weights(printed) == expected and subset(printed, "multiturn")["build"]["augment"] == augment
    assert set(printed["data"]["init_args"]["subsets"]) == {"multiturn", "conflict", "alignment"}
    assert from_ckpt in subset(printed, "conflict")["from_ckpt"]
    # The training recipe itself is the base's.
    assert printed["trainer"]["max_steps"] == resolved(RECIPE)["trainer"]["max_steps"]


def test_the_single_pass_baseline_trains_the_same_prompts_from_the_same_base():
    printed = resolved(RECIPE, "configs/ablations/single_pass.yaml")
    data = printed["data"]["init_args"]
    assert printed["data"]["class_path"].endswith("MultiTurnDataModule")
    assert data["reader"]["layout"] == "single_pass"
    recipe = resolved(RECIPE)
    # The same multi-turn build (its prompts and final scenes), the same base checkpoint and tokenizer.
    for key in ("root", "build"):
        assert data[key] == subset(recipe, "multiturn")[key], key
    assert data["tokenizer"] == recipe["data"]["init_args"]["tokenizer"]
    assert (
        printed["model"] == recipe["model"]
        and printed["trainer"]["max_steps"] == recipe["trainer"]["max_steps"]
    )
