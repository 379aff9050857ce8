"""`pdgen.lit.ModelCheckpoint`: `last.ckpt` holds the step where training ended, also between two saves."""

import lightning as L
import pytest
import torch

from pdgen.lit import ModelCheckpoint

LIGHTNINGS = L.pytorch.callbacks.ModelCheckpoint


@pytest.mark.parametrize(("saver", "expected"), [(ModelCheckpoint, 3), (LIGHTNINGS, 2)])
def test_a_run_stopped_between_saves_keeps_its_last_step(make_module, world_packs, tmp_path, saver, expected):
    # Saves every 2 steps, stops at 3 (as max_time stops a run anywhere): Lightning's own keeps step 2.
    world_packs.packs_consumed = 0
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[saver(tmp_path, save_last=True, every_n_train_steps=2)])  # fmt: skip
    trainer.fit(make_module(), datamodule=world_packs)
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == expected
