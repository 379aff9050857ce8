"""The divergence guard: a NaN loss stops the run non-zero; the last checkpoint stays the last finite one."""

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from world_packs import fit_args

from pdgen.cli import main
from pdgen.lit import EMA, AtomicCheckpointIO, DivergenceGuard
from pdgen.lit.checkpoint_io import load_checkpoint_file
from pdgen.lit.guard import TrainingDiverged
from pdgen.lit.module import ScheduleConfig


def all_finite(checkpoint: dict) -> bool:
    """Whether every weight of a checkpoint is finite, its EMA average included."""
    tensors = [*checkpoint["state_dict"].values(), *checkpoint["callbacks"]["EMA"]["shadow"].values()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def test_a_diverging_fit_exits_non_zero_and_keeps_the_last_finite_checkpoint(every_step_config, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        lr = ["--model.init_args.optimizer.init_args.lr", "1e6"]
        lr = ["--model.init_args.optimizer.init_args.lr", "1e6"]
        main(fit_args(tmp_path, "-c", str(every_step_config), *lr, "--trainer.max_steps", "40"))
    message = str(stopped.value.code)
    assert message.startswith("pdgen fit: training diverged at step ") and "last finite loss" in message
    diverged_at = int(message.split("step ")[1].split(":")[0])
    last = load_checkpoint_file(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == diverged_at  # saved after the last finite step, not after the bad one
    assert all_finite(last)


def test_bad_steps_can_be_skipped_without_touching_the_weights(make_module, world_packs, tmp_path):
    module = make_module(schedule=ScheduleConfig(warmup_steps=1))
    original = module.training_step

    def training_step(batch, batch_idx):  # the loss of step 1 is NaN
        loss = original(batch, batch_idx)
        return loss * torch.nan if module.trainer.global_step == 1 else loss

    module.training_step = training_step
    weights: list[torch.Tensor] = []

    class Snapshot(EMA):  # records the weights after every step
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            weights.append(pl_module.trunk.llm2vae.weight.detach().clone())

    guard = DivergenceGuard(skip_bad_steps=1)
    trainer = Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      callbacks=[Snapshot(), guard])  # fmt: skip
    trainer.fit(module, datamodule=world_packs)
    assert trainer.global_step == 3 and guard.bad_steps == 1
    assert torch.equal(weights[1], weights[0]) and not torch.equal(weights[2], weights[1])


def test_a_checkpoint_with_non_finite_weights_is_never_written(make_module, world_packs, tmp_path):
    module = make_module(schedule=ScheduleConfig(warmup_steps=1))
    saver = ModelCheckpoint(tmp_path, save_last=True, every_n_train_steps=1)
    trainer = Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, plugins=[AtomicCheckpointIO()],
                      callbacks=[EMA(decay=0.9), saver, DivergenceGuard()])  # fmt: skip
    trainer.fit(module, datamodule=world_packs)
    before = (tmp_path / "last.ckpt").read_bytes()
    with torch.no_grad():
        module.trunk.llm2vae.weight[0, 0] = torch.inf  # what a finite loss with an overflowing update leaves
    with pytest.raises(TrainingDiverged, match=r"are not finite \(trunk\.llm2vae\.weight\)"):
        trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == before
