"""The `pdgen` command line: its public surface, the command groups, and the README/CI contract."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pdgen import commands
from pdgen.cli import LIGHTNING_COMMANDS, main
from pdgen.errors import UserError
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory

ROOT = Path(__file__).resolve().parents[1]
EVERY_COMMAND = ["fit", "validate", "test", "predict", "data", "eval", "view"]


def test_help_lists_every_command_with_one_line_each(capsys) -> None:
    main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for command in EVERY_COMMAND:
        [line] = [line for line in lines if re.match(rf"  {command}\s", line)]
        assert len(line.split(maxsplit=1)) == 2, f"{command} has no one-line summary"
    for group in commands.GROUPS:
        for sub in commands.subcommands(group):
            assert any(line.split() == [sub.name, *sub.summary.split()] for line in lines), sub


def test_fit_help_is_lightning_cli(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["fit", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "-c CONFIG, --config CONFIG",
        "--print_config",
        "--model",
        "--data",
        "--trainer.max_steps",
    ):
        assert option in out
    # Optimizers are injected into the modules, not added by LightningCLI.
    assert "--optimizer" not in out


def test_several_configs_layer_in_order(tmp_path, capsys) -> None:
    override = tmp_path / "override.yaml"
    override.write_text("trainer:\n  max_steps: 7\n")
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(ROOT / "configs/trainer/cpu.yaml"), "-c", str(override), "--print_config"])
    out = capsys.readouterr().out
    assert "  max_steps: 7\n" in out and "  accelerator: cpu\n" in out and "  max_steps: 2000\n" not in out


def test_configs_interpolate_a_value_written_once(capsys) -> None:
    # LightningCLI reads configs in omegaconf mode: base.yaml's checkpoint folder is its logger's run folder.
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(ROOT / "configs/base.yaml"), "--print_config"])
    out = capsys.readouterr().out
    assert "      name: base\n" in out and "      dirpath: runs/base/checkpoints\n" in out and "${" not in out


def test_unknown_command_exits_with_the_usage(capsys) -> None:
    with pytest.raises(SystemExit, match="unknown command 'train'"):
        main(["train"])
    assert "Command groups" in capsys.readouterr().err


def test_a_missing_config_file_is_a_short_error_naming_it_and_the_configs_there(capsys) -> None:
    for argv in (["fit", "-c", "configs/nope.yaml"], ["data", "build", "--config=configs/nope.yaml"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert str(exited.value.code) == (
            f"pdgen {argv[0]}: config file configs/nope.yaml not found.\n"
            "In configs/: base.yaml, edit.yaml, full.yaml, lora.yaml, predict.yaml, qlora.yaml."
        )
    with pytest.raises(SystemExit, match=r"there is no folder nowhere/ here\.\nThe configs that ship are in"):
        main(["fit", "--config", "nowhere/full.yaml"])
    assert capsys.readouterr().err == ""  # no usage dump


def test_a_missing_checkpoint_in_a_config_file_is_caught_before_anything_is_built(tmp_path) -> None:
    config = tmp_path / "resume.yaml"
    config.write_text(f"ckpt_path: {tmp_path / 'runs' / 'last.ckpt'}\n")
    with pytest.raises(SystemExit, match=r"^pdgen fit: checkpoint \S+last.ckpt not found, and there is no"):
        main(["fit", "-c", "configs/full.yaml", "-c", str(config)])


def test_the_debug_switch_shows_the_traceback(monkeypatch) -> None:
    monkeypatch.setenv("PDGEN_DEBUG", "1")
    with pytest.raises(UserError, match="config file configs/nope.yaml not found"):
        main(["fit", "-c", "configs/nope.yaml"])


@pytest.mark.parametrize("group", commands.GROUPS)
def test_every_subcommand_builds_its_parser(group: str, capsys) -> None:
    # Every parameter needs a type for jsonargparse; this catches one without, in any group.
    with pytest.raises(SystemExit) as exited:
        commands.run(group, ["--help"])
    assert exited.value.code == 0
    for sub in commands.subcommands(group):
        assert sub.summary, f"pdgen {group} {sub.name} needs a docstring"
        with pytest.raises(SystemExit) as exited:
            commands.run(group, [sub.name, "--help"])
        assert exited.value.code == 0
    capsys.readouterr()


@pytest.mark.parametrize("group", commands.GROUPS)
def test_every_public_function_of_a_group_is_one_of_its_subcommands(group: str) -> None:
    # `COMMANDS` lists them by hand; this catches a command function left out, or a helper listed.
    module = importlib.import_module(f"pdgen.commands.{group}")
    public = [
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")
    ]
    assert [sub.function.__name__ for sub in commands.subcommands(group)] == public
    with pytest.raises(ValueError, match="unknown command group 'train'"):
        commands.subcommands("train")


def test_view_html_shows_every_step(tmp_path, capsys) -> None:
    square = Image.new("RGB", (8, 8), "red")
    trajectory = Trajectory(
        "a red square & a <3",
        [
            Plan("Draw a square.", "A square."),
            Sketch(square),
            Inspect("Too small.", "Make it bigger."),
            Refine(Plan("Enlarge it.", "A big square."), Image.new("RGB", (8, 8), "orange")),
        ],
    )
    trajectory.save(tmp_path / "shards" / "000001")
    page = tmp_path / "page.html"
    main(["view", "html", str(tmp_path / "shards"), "--out", str(page)])
    assert capsys.readouterr().out.strip() == str(page)
    text = page.read_text()
    assert "a red square &amp; a &lt;3" in text and "Make it bigger." in text
    assert text.count("data:image/png;base64,") == 2 and text.count('class="image answer"') == 1


def test_view_html_reads_webdataset_shards(tmp_path) -> None:
    import webdataset as wds

    trajectory = Trajectory("a dot", [Plan("Add a dot.", "A dot."), Sketch(Image.new("RGB", (4, 4), "red"))])
    with wds.TarWriter(str(tmp_path / "shard-000000.tar")) as sink:
        for key in ("000000", "000001"):
            sink.write({"__key__": key, **trajectory.to_files()})
    page = tmp_path / "page.html"
    main(["view", "html", str(tmp_path / "shard-000000.tar"), "--out", str(page), "--limit", "5"])
    text = page.read_text()
    assert "shard-000000.tar / 000000" in text and "shard-000000.tar / 000001" in text
    main(["view", "html", str(tmp_path / "shard-000000.tar")])  # without --out: beside the shard
    assert (tmp_path / "shard-000000.html").read_text() == text


def test_view_html_without_trajectories_is_an_error(tmp_path) -> None:
    with pytest.raises(SystemExit, match="^pdgen view html: no trajectories in"):
        main(["view", "html", str(tmp_path)])


def test_console_script_answers_help_without_importing_lightning() -> None:
    script = Path(sys.executable).with_name("pdgen")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert all(command in out for command in LIGHTNING_COMMANDS)
    probe = (
        "import sys; from pdgen.cli import main; main(['--help']); "
        "print(sorted(m for m in ('lightning', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.+?)\n```", readme, flags=re.S)
    [install_and_test] = [block for block in blocks if "pytest" in block]
    assert install_and_test.endswith(".venv/bin/pytest -q") and "\n" not in install_and_test
    assert install_and_test in (ROOT / ".ci/run").read_text().splitlines()


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_makes_openmp_wait_passively_unless_told_otherwise(given, expected):
    # Read once when torch loads OpenMP, so it must be set by importing pdgen.cli, before torch.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = (
        "import os, sys, pdgen.cli\nassert 'torch' not in sys.modules\nprint(os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("config", ["configs/full.yaml", "configs/base.yaml"])
def test_the_data_side_reads_images_with_the_models_trunk_geometry(config: str) -> None:
    """`link_trunk_geometry`: the data module's packing geometry comes from the instantiated trunk."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    from pdgen.data.packing_config import PackingConfig, PackingGeometry
    from pdgen.lit.runner import link_trunk_geometry

    class Linked(LightningCLI):  # `pdgen fit`'s PdgenCLI adds the link the same way
        def add_arguments_to_parser(self, parser):
            link_trunk_geometry(parser)

    cli = Linked(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        auto_configure_optimizers=False, save_config_callback=None, run=False,
        args=["-c", config, "--trainer.logger", "false"],
    )  # fmt: skip
    trunk = cli.model.trunk.config
    assert cli.datamodule.packing_config.geometry == PackingGeometry.of_trunk(trunk)
    preset = PackingConfig.from_name("embedded")  # both configs' reader.packing
    assert cli.datamodule.packing_config == preset.for_trunk(trunk)
    assert preset.geometry != PackingGeometry.of_trunk(trunk)  # the embedded trunk's is not the preset's
