"""The README's commands, run as a new user copies them: in order, from a fresh copy of the repository, in a
shell that is not a terminal (as a log file or a CI job sees them), each of them to exit 0.

Two things differ from a new user's run, and only these:
- Installing: the copy's `.venv` is a link to the environment running this test, where pdgen and its
  dependencies are installed already, so the commands' `python3.11 -m venv .venv` and `.venv/bin/pip
  install …` steps are left out (the other steps of the same `&&` chain run). `PYTHONPATH` points at the
  copy, so its pdgen is the one imported.
- Time: `pdgen fit` and `pdgen predict` get overrides appended that shorten them to seconds (`SHORT_FIT`,
  `short_data`, `SHORT_PREDICT`), and the base stage the fit trains first gets a config layered over its own
  (`SHORT_BASE`): a few caption pairs, two steps. Both runs validate without the ShapesEval monitor (`LEAN`),
  whose generations would take minutes. When the README's main job changes (another config, another stage),
  this is the place to say how to shorten it.

The README's test command is not run: it is this test suite (`.ci/run` runs it, `tests/test_cli.py` checks
that it is the README's).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

SHORT_FIT = [
    "--trainer.max_steps", "3",
    "--trainer.val_check_interval", "3",
    "--trainer.limit_val_batches", "1",
]  # fmt: skip
"""Appended to the README's `pdgen fit`: three steps, then one validation batch of each validation set."""

LEAN = {
    "callbacks": [
        {"class_path": "pdgen.lit.EMA", "init_args": {"decay": 0.995}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
    ]
}
"""The fit's callbacks in the test: the EMA the predict run samples with, and `last.ckpt`."""

SHORT_BASE = {
    "data": {"init_args": {"build": {"num_samples": 16, "val_size": 2, "tokenizer_trajectories": 8},
                           "reader": {"num_workers": 0}}},
    "trainer": {"max_steps": 2, "val_check_interval": 2, "limit_val_batches": 1, "callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": "runs/base/checkpoints", "save_last": True}},
    ]},
}  # fmt: skip
"""Layered over configs/base.yaml when the fit trains the base stage first: two steps on 16 caption pairs."""

SHORT_PREDICT = [
    "--data.limit", "2",
    "--data.generation_overrides", '{"num_timesteps": 3, "max_text_tokens": 32, "max_images": 2}',
]  # fmt: skip
"""Appended to the README's `pdgen predict`: two prompts, few flow steps, short texts."""

INSTALL_STEP = re.compile(r"python3\.11 -m venv \.venv|\.venv/bin/pip install .*")


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    """The commands of the README's fenced `bash` blocks, in order: one per line, continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", readme(), flags=re.S)
    lines = "\n".join(block.replace("\\\n", " ") for block in blocks).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def suite_command() -> str:
    """The README's command that installs the development extras and runs this suite."""
    [command] = [command for command in readme_commands() if command.endswith("pytest -q")]
    return command


def short_data(config_files: list[str], root: Path) -> list[str]:
    """Overrides that build every data subset of the fit's configs at a few samples each.

    The subsets are read from the configs as the fit layers them (a later file replaces `subsets` whole),
    so a recipe with other subsets is shortened too.
    """
    subsets: dict = {}
    for name in config_files:
        config = yaml.safe_load((root / name).read_text(encoding="utf-8")) or {}
        subsets = (config.get("data") or {}).get("init_args", {}).get("subsets", subsets)
    overrides = []
    for name, subset in subsets.items():
        build = subset.get("init_args", {}).get("build", {})
        for key, value in (("num_trajectories", 16), ("num_samples", 8), ("val_size", 4)):
            if key in build:
                overrides += [f"--data.init_args.subsets.{name}.init_args.build.{key}", str(value)]
    return overrides


def as_run_here(command: str, root: Path, scratch: Path) -> str:
    """The README's `command` as this test runs it: install steps left out, the long jobs shortened (the
    configs that shorten them written to `scratch`, outside the copy)."""
    steps = [step.strip() for step in command.split("&&") if not INSTALL_STEP.fullmatch(step.strip())]
    lean, short_base = scratch / "lean.yaml", scratch / "short_base.yaml"
    lean.write_text(yaml.safe_dump({"trainer": LEAN}))
    short_base.write_text(yaml.safe_dump(SHORT_BASE))
    shortened = []
    for step in steps:
        words = shlex.split(step)
        if words[:2] == [".venv/bin/pdgen", "fit"]:
            configs = [words[i + 1] for i, word in enumerate(words) if word in ("-c", "--config")]
            base = f'["configs/base.yaml", "{short_base}"]'
            words += ["-c", str(lean), *SHORT_FIT, *short_data(configs, root)]
            words += ["--model.init_args.init_from_config", base]
        elif words[:2] == [".venv/bin/pdgen", "predict"]:
            words += SHORT_PREDICT
        shortened.append(shlex.join(words))
    return " && ".join(shortened)


@pytest.mark.slow
def test_the_readme_commands_work_copied_in_order(tmp_path) -> None:
    root = Path(shutil.copytree(ROOT, tmp_path / "pdgen", ignore=_ignored_by_git))
    (root / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    before = set(_not_ignored(root))
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("PDGEN_DEBUG", None)

    commands = [command for command in readme_commands() if command != suite_command()]
    install_and_fit = "python3.11 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/pdgen fit "
    assert commands[0].startswith(install_and_fit)  # the main job comes first
    logs = {}
    for command in commands:
        run = subprocess.run(
            ["bash", "-c", as_run_here(command, root, tmp_path)],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, f"{command}\n exited {run.returncode}:\n{run.stdout[-4000:]}"
        logs[command] = run.stdout

    fit = logs[commands[0]]
    # The log says what the run is doing: each subset built, steps with their loss, each validation.
    assert re.search(r"^building multiturn in data/\S+: \d+ trajectories to do$", fit, flags=re.M), fit
    assert re.search(r"^step 2/3 · train/loss [\d.]+ · .* images/s · .* so far · about \d+s left$", fit, re.M)
    assert re.search(r"^validation at step 3 \(\S+ batches\): val/\S+ [\d.]+", fit, flags=re.M), fit
    # No redrawn bar, and none of the third-party noise a user cannot act on.
    for noise in ("\r", "litlogger", "LeafSpec", "transfer_batch_to_device"):
        assert noise not in fit, noise
    # Outputs land where the README says, readable by others; the repository ignores all of them.
    for output in ("predictions/eval_shapes.json", "predictions/trajectories.html"):
        assert (root / output).stat().st_mode & 0o777 == 0o644, output
    assert set(_not_ignored(root)) == before
    # Commands named in the README's prose are installed in the environment too.
    for program in re.findall(r"`\.venv/bin/([\w-]+)", readme()):
        assert (root / ".venv" / "bin" / program).is_file(), program


def _ignored_by_git(folder: str, names: list[str]) -> set[str]:
    """`shutil.copytree`'s filter: what a fresh clone lacks (`.git`, and what `.gitignore` covers: a pattern
    with a leading `/` only at the top, the others at any depth)."""
    patterns = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines() if line.strip()]
    here = [p.strip("/") for p in patterns if Path(folder) == ROOT or not p.startswith("/")]
    return {name for name in names if name == ".git" or any(fnmatch(name, p) for p in here)}


def _not_ignored(root: Path) -> list[str]:
    """The files under `root` that `git status` would list: those `.gitignore` does not cover."""
    if shutil.which("git") is None:
        pytest.skip("needs git to read .gitignore as git does")
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    listed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    return listed.stdout.splitlines()
