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
- A checkpoint written before `ProcessDrivenModule` grouped its arguments (`warmup_steps`, `lora_rank`, ...
  flat) reads back into the groups (`schedule.warmup_steps`, `lora.rank`): `nest_legacy_hparams`.
- Quiet: two messages a user can do nothing about are dropped at the place they are emitted (see
  `quiet_lightning`); every other warning still shows.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from pdgen.console import stderr_is_terminal
from pdgen.errors import NO_CHECKPOINT, UserError, checkpoint_exists, missing_file
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


def link_trunk_geometry(parser: LightningArgumentParser) -> None:
    """Link the model's trunk to the data side: the data module's ``geometry`` (pixels per latent token,
    ViT patch, position-table sides) is ``PackingGeometry.of_trunk`` of the instantiated trunk's config.

    Applied on instantiation, so the trunk is resolved once (a preset or a checkpoint directory) by the model
    itself; the data module's packing preset keeps its policy (sizes, ViT copies).
    """
    parser.link_arguments(
        "model.trunk", "data.init_args.geometry", compute_fn=trunk_geometry, apply_on="instantiate"
    )


def trunk_geometry(trunk: Any) -> Any:
    """The ``PackingGeometry`` of an instantiated trunk (``BagelTrunk``): ``link_trunk_geometry``'s value."""
    from pdgen.data.packing_config import PackingGeometry

    return PackingGeometry.of_trunk(trunk.config)


class PdgenCLI(LightningCLI):
    """LightningCLI that checks `ckpt_path` before it builds anything (`pdgen.cli` checks the command line
    before Lightning is even imported; this catches one that a config file gives)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        link_trunk_geometry(parser)

    def before_instantiate_classes(self) -> None:
        path = self.config[self.subcommand].get("ckpt_path")
        if path is not None and not checkpoint_exists(path):
            raise missing_file("checkpoint", path, "*.ckpt", NO_CHECKPOINT)
        model = self.config[self.subcommand].get("model")
        if path is not None and model is not None and model.get("dict_kwargs"):
            nest_legacy_hparams(model)  # a checkpoint older than the module's `schedule` and `lora` groups


# Where the flat `ProcessDrivenModule` arguments of checkpoints written before its groups existed now live.
LEGACY_HPARAMS = {
    "warmup_steps": "schedule.warmup_steps",
    "min_lr_ratio": "schedule.min_lr_ratio",
    "schedule_steps": "schedule.steps",
    "lora_rank": "lora.rank",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_experts": "lora.experts",
}


def nest_legacy_hparams(model: Namespace) -> None:
    """Moves the flat hyperparameters of an older checkpoint into their groups, in a parsed `model` config.

    LightningCLI puts a `--ckpt_path` checkpoint's hyperparameters over the config (they win), and those it
    does not know under `dict_kwargs`, which the module would refuse: `warmup_steps: 100` becomes
    `schedule.warmup_steps: 100`.
    """
    extra = model.get("dict_kwargs") or {}
    for old, new in LEGACY_HPARAMS.items():
        if old in extra:
            model[f"init_args.{new}"] = extra.pop(old)


def quiet_lightning() -> None:
    """Drop three messages a pdgen user cannot act on, each matched exactly where it is emitted.

    - Lightning's tip to install its cloud logging service (logged at INFO on every run without it).
    - torch's deprecation of `isinstance(treespec, LeafSpec)`: Lightning 2.6's own `_pytree` builds a
      `LeafSpec` for every data loader; only a Lightning release can change that.
    - Lightning's advice, once per validation metric on a run of several ranks, to log it with
      `sync_dist=True`. pdgen logs what rank 0 reads: which per-head metrics a rank logs depends on the
      tokens of its packs, so a synced key that one rank lacks would leave the other waiting forever. A
      subset's validation shards are read whole by every rank when they are fewer than the readers (the
      embedded builds write one), so rank 0's figures are then the whole validation set's.
    """
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_the_litlogger_tip)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    warnings.filterwarnings(
        "ignore",
        message=r"It is recommended to use `self\.log\('val/",
        module=r"lightning\.pytorch\.trainer\.connectors\.logger_connector\.result",
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
            parser_kwargs={"prog": "pdgen", "parser_mode": "omegaconf"},  # configs may say ${...}
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
