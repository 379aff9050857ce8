"""LightningCLI as `pdgen fit|validate|test|predict` runs it: Lightning does the work, this adds what a
user of the command line needs around it.

- A `--ckpt_path` that does not exist is a short `UserError` naming it and listing its folder, raised
  before the model and data are built (it used to be a traceback, seconds later); one that is there but
  cannot be read (empty, truncated, not a checkpoint) is one too, checked before LightningCLI reads its
  hyperparameters with a bare `torch.load`.
- Checkpoints are written atomically beside their destination and read with `weights_only=True`
  (`AtomicCheckpointIO`), and a diverged run ends with the guard's one-line message and a non-zero exit.
- The run's record, LightningCLI's copy of the merged config (`config.yaml` in the log or output folder),
  is written once the run has started (`SaveConfigOnStart`): LightningCLI writes it in `setup`, before
  the checkpoint is loaded, so `pdgen predict --ckpt_path typo.ckpt` into an existing prediction folder
  replaced the record of how its samples were made, and then failed.
- Progress a log file can show: the progress bar is drawn only when stderr is a terminal (a redrawn bar
  is unreadable in a file), and `ProgressLog` writes plain lines when there is no bar.
- Quiet: two messages a user can do nothing about are dropped at the place they are emitted (see
  `quiet_lightning`); every other warning still shows.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from pdgen.cli import NO_CHECKPOINT, UserError, checkpoint_exists, link_trunk_geometry, missing_file
from pdgen.console import stderr_is_terminal
from pdgen.lit.checkpoint_io import CheckpointError, check_checkpoint_file
from pdgen.lit.guard import TrainingDiverged
from pdgen.lit.progress import ProgressLog


class SaveConfigOnStart(SaveConfigCallback):
    """LightningCLI's config record, written when the stage starts (after the checkpoint has loaded) instead
    of at `setup`, so a run that fails to start leaves the previous run's `config.yaml` as it was."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Deferred: see the class docstring."""

    def _save(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().setup(trainer, pl_module, trainer.state.fn.value)  # a no-op once saved

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer, pl_module)


class PdgenCLI(LightningCLI):
    """LightningCLI that checks `ckpt_path` before it builds anything (`pdgen.cli` checks the command line
    before Lightning is even imported; this catches one that a config file gives)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        link_trunk_geometry(parser)

    def before_instantiate_classes(self) -> None:
        path = self.config[self.subcommand].get("ckpt_path")
        if path is not None and not checkpoint_exists(path):
            raise missing_file("checkpoint", path, "*.ckpt", NO_CHECKPOINT)


def quiet_lightning() -> None:
    """Drop two messages a pdgen user cannot act on, each matched exactly where it is emitted.

    - Lightning's tip to install its cloud logging service (logged at INFO on every run without it).
    - torch's deprecation of `isinstance(treespec, LeafSpec)`: Lightning 2.6's own `_pytree` builds a
      `LeafSpec` for every data loader; only a Lightning release can change that.
    """
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_the_litlogger_tip)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


def _not_the_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def run(args: list[str] | None) -> None:
    """`pdgen fit|validate|test|predict`: LightningCLI on `args`, or on `sys.argv` when None.

    Raises:
        UserError: an unreadable `--ckpt_path`, or a run the divergence guard stopped.
    """
    quiet_lightning()
    try:
        _check_readable_ckpt_path(sys.argv[1:] if args is None else args)
        PdgenCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            # Modules build their own optimizer from an injected `OptimizerCallable` over trainable
            # parameters only; LightningCLI's automatic `--optimizer` group would also hand it the frozen
            # ones (LoRA).
            auto_configure_optimizers=False,
            save_config_callback=SaveConfigOnStart,
            save_config_kwargs={"overwrite": True},
            # Callbacks given here are added to the config's own; the bar is only drawn in a terminal.
            # Checkpoints are written atomically beside their destination and read with weights_only=True.
            trainer_defaults={
                "callbacks": [ProgressLog()],
                "enable_progress_bar": stderr_is_terminal(),
                "plugins": [{"class_path": "pdgen.lit.checkpoint_io.AtomicCheckpointIO"}],
            },
            parser_kwargs={"prog": "pdgen"},
            args=args,
        )
    except (TrainingDiverged, CheckpointError) as error:
        raise UserError(str(error)) from error


def _check_readable_ckpt_path(argv: list[str]) -> None:
    """Check a `--ckpt_path` file that is there before LightningCLI reads its hyperparameters with a bare
    `torch.load`, so an empty, truncated or foreign file is named (a missing one is `pdgen.cli`'s error)."""
    for word, following in zip(argv, [*argv[1:], None], strict=True):
        path = following if word == "--ckpt_path" else word.removeprefix("--ckpt_path=")
        if word.startswith("--ckpt_path") and path and os.path.isfile(path):
            check_checkpoint_file(path)
