"""The `pdgen` command line: LightningCLI for training, plain command groups for everything else.

    pdgen fit|validate|test|predict ...   LightningCLI: `-c` config layering, `--print_config`, `--help`
    pdgen data|eval|view <name> ...       plain jsonargparse commands, one function each (`pdgen.commands`)

`main` dispatches on the first word by hand, so `pdgen --help` and the command groups never import
Lightning (which costs 5–7 s here): only the four LightningCLI subcommands pay for it.

Configs name the model and data module by import path (`class_path: pdgen.some.module.SomeModule`);
jsonargparse imports the module when it reads the path, so nothing is imported up front.
"""

from __future__ import annotations

import os
import sys

# OpenMP threads that finish early spin while they wait for the others. On a small shared CPU (the embedded
# default's 2 cores, one of them also feeding the DataLoader worker) the spinning threads take the cores the
# late ones need: a training step ran 2.3x slower spinning with one other busy process, 15x with two
# (docs/benchmarks.md). The policy is read once, when torch loads its OpenMP runtime, so it is set before
# anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pdgen import __version__, commands  # noqa: E402

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
    ]
    return "\n".join(lines)


def _run_lightning(args: list[str] | None) -> None:
    """LightningCLI on `args`, or on `sys.argv` when None (it warns when given both).

    A diverged run and an unreadable checkpoint end with their one-line message and a non-zero exit.
    """
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    from pdgen.lit.checkpoint_io import CheckpointError
    from pdgen.lit.guard import TrainingDiverged

    try:
        _check_ckpt_path(sys.argv[1:] if args is None else args)
        LightningCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            # Modules build their own optimizer from an injected `OptimizerCallable` over trainable parameters
            # only; LightningCLI's automatic `--optimizer` group would also hand it the frozen ones (LoRA).
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "pdgen"},
            # Checkpoints written atomically beside their destination and read with weights_only=True.
            trainer_defaults={"plugins": [{"class_path": "pdgen.lit.checkpoint_io.AtomicCheckpointIO"}]},
            args=args,
        )
    except (TrainingDiverged, CheckpointError) as error:
        raise SystemExit(f"pdgen: {error}") from error


def _check_ckpt_path(argv: list[str]) -> None:
    """Check a `--ckpt_path` file before LightningCLI reads its hyperparameters with a bare `torch.load`,
    so an empty, truncated or foreign file is named (a missing one is left to Lightning)."""
    from pdgen.lit.checkpoint_io import check_checkpoint_file

    for word, following in zip(argv, [*argv[1:], None], strict=True):
        path = following if word == "--ckpt_path" else word.removeprefix("--ckpt_path=")
        if word.startswith("--ckpt_path") and path and os.path.isfile(path):
            check_checkpoint_file(path)


def main(args: list[str] | None = None) -> None:
    """Run the `pdgen` command line.

    Args:
        args: the words after `pdgen`; `None` reads `sys.argv[1:]`. Tests call `main([...])` in-process.
    """
    argv = list(sys.argv[1:] if args is None else args)
    command = argv[0] if argv else None
    if command in (None, "-h", "--help"):
        print(usage())
    elif command == "--version":
        print(f"pdgen {__version__}")
    elif command in commands.GROUPS:
        commands.run(command, argv[1:])
    elif command in LIGHTNING_COMMANDS:
        _run_lightning(args)
    else:
        print(usage(), file=sys.stderr)
        raise SystemExit(f"pdgen: unknown command {command!r}")


if __name__ == "__main__":
    main()
