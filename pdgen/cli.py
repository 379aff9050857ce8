"""The `pdgen` command line: LightningCLI for training, plain command groups for everything else.

    pdgen fit|validate|test|predict ...   LightningCLI (`pdgen.lit.runner`): `-c` config layering, `--help`
    pdgen data|eval|view <name> ...       plain jsonargparse commands, one function each (`pdgen.commands`)

`main` dispatches on the first word by hand, so `pdgen --help` and the command groups never import
Lightning (which costs 5–7 s here): only the four LightningCLI subcommands pay for it.

Configs name the model and data module by import path (`class_path: pdgen.some.module.SomeModule`);
jsonargparse imports the module when it reads the path, so nothing is imported up front.

Mistakes a user can put right (a config file or checkpoint that is not there) are a `UserError`: `main`
prints its message, a few lines that name the file and say what to do, instead of a usage dump or a
traceback. `PDGEN_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# OpenMP threads that finish early spin while they wait for the others. On a small shared CPU (the embedded
# default's 2 cores, one of them also feeding the DataLoader worker) the spinning threads take the cores the
# late ones need: a training step ran 2.3x slower spinning with one other busy process, 15x with two
# (docs/benchmarks.md). The policy is read once, when torch loads its OpenMP runtime, so it is set before
# anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pdgen import __version__, commands  # noqa: E402

DEBUG_VARIABLE = "PDGEN_DEBUG"
"""Set (to anything but empty or 0) to see the traceback of a user error."""


class UserError(Exception):
    """A mistake the user can put right; the message names the file or value and says what to do."""


def missing_file(what: str, path: str | os.PathLike[str], pattern: str, otherwise: str) -> UserError:
    """The error for a file that is not there, with what its folder holds instead.

    Args:
        what: what the file is, e.g. `config file`.
        path: the path as the user gave it.
        pattern: the names worth listing from its folder, e.g. `*.yaml`.
        otherwise: what to do when its folder holds no such file, or is not there either.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        return UserError(f"{what} {path} not found, and there is no folder {folder}/ here.\n{otherwise}")
    found = sorted(file.name for file in folder.glob(pattern))
    hint = f"In {folder}/: {', '.join(found)}." if found else otherwise
    return UserError(f"{what} {path} not found.\n{hint}")


NO_CONFIG = (
    "The configs that ship are in the repository's configs/ folder: run pdgen from the repository root, or "
    "give the file's full path."
)
NO_CHECKPOINT = (
    "`pdgen fit` writes checkpoints under its logger's folder, runs/NAME/version_N/checkpoints/ "
    "(`ls runs/*/*/checkpoints/` lists them)."
)


LIGHTNING_COMMANDS = {
    "fit": "Train a model: runs the training loop with periodic validation.",
    "validate": "Run one pass over the validation set and report the metrics.",
    "test": "Run one pass over the test set and report the metrics.",
    "predict": "Generate with a trained model over the prediction set.",
}
"""The LightningCLI subcommands with the one line `pdgen --help` shows for each."""


def usage() -> str:
    """The text of `pdgen --help`: every command with one line each."""
    lines = [
        "usage: pdgen <command> [options]",
        "",
        "Process-driven image generation: plan, sketch, inspect and refine in one interleaved sequence.",
        "",
        "Training (LightningCLI: layer configs with several -c; options in `pdgen <command> --help`):",
    ]
    lines += [f"  {name:<10}{summary}" for name, summary in LIGHTNING_COMMANDS.items()]
    lines += ["", "Command groups (`pdgen <group> <command> --help`):"]
    for group in commands.GROUPS:
        lines.append(f"  {group:<10}{commands.group_summary(group)}")
        lines += [f"    {sub.name:<16}{sub.summary}" for sub in commands.subcommands(group)]
    lines += [
        "",
        "Options:",
        "  -h, --help    show this message and exit",
        "  --version     show the version",
        "",
        f"A mistake (a missing file, say) prints a short error; {DEBUG_VARIABLE}=1 shows its traceback.",
    ]
    return "\n".join(lines)


def _check_files(argv: list[str]) -> None:
    """A `-c/--config FILE` or `--ckpt_path FILE` on the command line that does not exist is a `UserError`.

    Checked before anything is imported or parsed: jsonargparse would print its whole usage for a config, and
    Lightning would raise a traceback for a checkpoint after building the model and data. A value that is not
    a path (inline YAML, `--config '{trainer: {max_steps: 5}}'`; `--ckpt_path last`) is left to the parser.
    """
    options = {"-c": "config", "--config": "config", "--ckpt_path": "ckpt_path"}
    for number, word in enumerate(argv):
        name, equals, value = word.partition("=")
        if name not in options or (not equals and number + 1 == len(argv)):
            continue
        value = value if equals else argv[number + 1]
        if options[name] == "config" and not any(mark in value for mark in ("\n", "{", ": ")):
            if not Path(value).is_file():
                raise missing_file("config file", value, "*.yaml", NO_CONFIG)
        elif options[name] == "ckpt_path" and not checkpoint_exists(value):
            raise missing_file("checkpoint", value, "*.ckpt", NO_CHECKPOINT)


def checkpoint_exists(path: str | os.PathLike[str]) -> bool:
    """Whether `--ckpt_path` names a file that is there, or something Lightning resolves (`last`, a URL)."""
    return str(path) in ("best", "last", "hpc", "registry") or "://" in str(path) or Path(path).exists()


def link_trunk_geometry(parser: Any) -> None:
    """Link the model's trunk to the data side: the data module's ``geometry`` (pixels per latent token,
    ViT patch, position-table sides) is ``PackingGeometry.of_trunk`` of the instantiated trunk's config.

    Applied on instantiation, so the trunk is resolved once (a preset or a checkpoint directory) by the model
    itself; the data module's packing preset keeps its policy (sizes, ViT copies). A LightningCLI parser's
    ``add_arguments_to_parser`` calls this (``pdgen.lit.runner``).
    """
    parser.link_arguments(
        "model.trunk", "data.init_args.geometry", compute_fn=trunk_geometry, apply_on="instantiate"
    )


def trunk_geometry(trunk: Any) -> Any:
    """The ``PackingGeometry`` of an instantiated trunk (``BagelTrunk``): ``link_trunk_geometry``'s value."""
    from pdgen.data.packing_config import PackingGeometry

    return PackingGeometry.of_trunk(trunk.config)


def main(args: list[str] | None = None) -> None:
    """Run the `pdgen` command line.

    Args:
        args: the words after `pdgen`; `None` reads `sys.argv[1:]`. Tests call `main([...])` in-process.
    """
    argv = list(sys.argv[1:] if args is None else args)
    command = argv[0] if argv else None
    try:
        if command in (None, "-h", "--help"):
            print(usage())
        elif command == "--version":
            print(f"pdgen {__version__}")
        elif command in commands.GROUPS:
            _check_files(argv)
            commands.run(command, argv[1:])
        elif command in LIGHTNING_COMMANDS:
            _check_files(argv)
            from pdgen.lit.runner import run  # imports Lightning: only these four commands pay for it

            run(args)  # LightningCLI reads `sys.argv` itself when `args` is None (it warns when given both)
        else:
            print(usage(), file=sys.stderr)
            raise SystemExit(f"pdgen: unknown command {command!r}")
    except UserError as error:
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        raise SystemExit(f"pdgen {command}: {error}") from None


if __name__ == "__main__":
    main()
