"""How DataModules read (``pdgen.data.reading``), on a multi-turn shard set: one PackedBatch per step, resumed
at the exact pack, every skipped sample counted by cause, a reader that cannot fill a pack stopped."""

import dataclasses
import io
import logging
import shutil
import tarfile

import lightning as L
import pytest
import torch
from reading_kit import SMALL, fingerprint, module, take, trainer

from pdgen.data.datamodules import MultiTurnDataModule
from pdgen.data.packing import PackedBatch
from pdgen.data.reading import PackedTrajectoryDataset
from pdgen.testing.damage import decompression_bomb_png, rewrite_shard


def test_yields_packed_batches_for_the_trunk(built):
    dm = module(built)
    assert dm.tokenizer is not None and dm.packing_config.max_latent_size == 16  # the `tiny` preset
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, PackedBatch)
    assert 0.97 * 1024 <= batch.sequence_length <= 1024 and len(batch.sample_lens) > 1
    meta = batch.attention_meta()
    assert meta.num_tokens == batch.sequence_length
    mask = meta.dense_mask()  # (T, T): no token sees another sample
    first = batch.sample_lens[0]
    assert not mask[first:, :first].any()
    # Noised latents wait for the training module's timestep sampler; clean ones are t = 0.
    noised = torch.isin(batch.packed_vae_token_indexes, batch.mse_loss_indexes)
    assert batch.packed_timesteps[noised].isnan().all() and (batch.packed_timesteps[~noised] == 0).all()


def test_validation_reads_every_held_out_trajectory_once(built):
    dm = module(built)
    batches = list(dm.val_dataloader())
    assert sum(len(b.sample_lens) for b in batches) == SMALL.val_size
    assert [fingerprint(b) for b in dm.val_dataloader()] == [fingerprint(b) for b in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_state_dict_resumes_at_the_next_pack(built, workers):
    first = module(built, num_workers=workers)
    uninterrupted = take(first.train_dataloader(), 7)
    first.packs_consumed = 3  # what on_before_batch_transfer counts during fit
    state = first.state_dict()

    resumed = module(built, num_workers=workers)
    resumed.load_state_dict(state)
    assert take(resumed.train_dataloader(), 4) == uninterrupted[3:]


def test_the_stream_goes_on_past_an_epoch(built):
    # 48 trajectories make about 5 packs of 1024 tokens: 12 packs span several epochs, all different.
    packs = take(module(built).train_dataloader(), 12)
    assert len(set(packs)) == 12


def test_resume_refuses_another_worker_count(built):
    state = module(built, num_workers=2).state_dict()
    with pytest.raises(ValueError, match="num_workers"):
        module(built, num_workers=1).load_state_dict(state)


def test_resume_takes_no_workers_for_one(built):
    # One worker and none read the same stream (the CPU recipes moved from 1 to 0): either resumes the other.
    one = module(built, num_workers=1)
    uninterrupted = take(one.train_dataloader(), 5)
    one.packs_consumed = 2
    resumed = module(built, num_workers=0)
    resumed.load_state_dict(one.state_dict())
    assert take(resumed.train_dataloader(), 3) == uninterrupted[2:]


def test_prepare_data_refuses_shards_built_differently(built):
    with pytest.raises(ValueError, match="manifest.json holds 'multiturn' shards built with"):
        MultiTurnDataModule(built, dataclasses.replace(SMALL, augment=0.5)).prepare_data()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_sample_is_counted_and_training_goes_on(built, tmp_path, workers):
    root = tmp_path / "copy"
    shutil.copytree(built, root)
    shard = root / "train-000002.tar"
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar if info.isfile()]
    with tarfile.open(shard, "w") as tar:
        for info, data in members:
            if info.name.endswith(".01.png"):  # every sample of this shard loses its second image
                data = data[:20]
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dm = module(root, num_workers=workers)
    packs = take(dm.train_dataloader(), 5)  # a whole epoch and more
    assert len(set(packs)) == 5
    # All 8 of that shard, once per epoch read so far (workers read ahead), summed over the processes.
    unreadable = dm.skipped_samples["unreadable_image"]
    assert unreadable >= 8 and unreadable % 8 == 0


class Recorder(L.LightningModule):
    """A stand-in training module: records what it is fed, learns nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple] = []

    def training_step(self, batch: PackedBatch, index: int) -> torch.Tensor:
        self.seen.append(fingerprint(batch))
        return self.weight * batch.packed_text_ids.float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_resumed_fit_sees_the_packs_an_uninterrupted_fit_sees(built, tmp_path):
    full = Recorder()
    trainer(6, enable_checkpointing=False).fit(full, datamodule=module(built, num_workers=2))

    checkpoint = L.pytorch.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=4, save_top_k=-1)
    first = Recorder()
    trainer(4, callbacks=[checkpoint]).fit(first, datamodule=module(built, num_workers=2))
    [path] = tmp_path.glob("*.ckpt")
    assert torch.load(path, weights_only=False)["MultiTurnDataModule"]["packs_consumed"] == 4

    second = Recorder()
    resumed = module(built, num_workers=2)
    trainer(6, enable_checkpointing=False).fit(second, datamodule=resumed, ckpt_path=path)
    assert first.seen + second.seen == full.seen


class MetricsRecorder(L.pytorch.loggers.Logger):
    """A logger that keeps what it is given (TensorBoard gets the same calls)."""

    name, version = "recorder", 0
    experiment = None

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict] = []

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def damage(built, root) -> None:
    """A copy of ``built`` that loses 5 samples to a shard cut at a sample boundary and 1 to a
    decompression bomb in place of a PNG."""
    shutil.copytree(built, root)
    rewrite_shard(root / "train-000001.tar", keep=3)
    rewrite_shard(root / "train-000002.tar", replace={"train000000016.00.png": decompression_bomb_png()})


def test_every_lost_sample_is_counted_by_cause_and_training_goes_on(built, tmp_path, caplog):
    damage(built, tmp_path / "damaged")
    # At 200 tokens a pack, the longest samples (237 and 295 tokens) cannot be packed.
    dm = module(tmp_path / "damaged", max_tokens=200, prompt_dropout=0.0)
    epoch = PackedTrajectoryDataset(dm.stream("train"), dm.packer, dm.budget, epochs=1, skipped=dm.skipped)
    packed = sum(len(pack.sample_lens) for pack in epoch)
    lost = dm.skipped_samples
    assert lost["truncated"] == 5 and lost["unreadable_image"] == 1 and lost["corrupt"] == 0
    assert lost["too_long"] > 0 and packed + sum(lost.values()) == SMALL.num_trajectories

    logger = MetricsRecorder()
    fit = L.Trainer(max_steps=3, accelerator="cpu", logger=logger, log_every_n_steps=1,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                    enable_checkpointing=False)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pdgen.data.reading"):
        fit.fit(Recorder(), datamodule=dm)
    assert fit.global_step == 3  # the run went on
    logged = [m for m in logger.metrics if "data/skipped_truncated" in m]
    assert logged and logged[-1]["data/skipped_unreadable_image"] >= 1
    assert any(line.startswith("data: ") and "truncated" in line for line in caplog.messages)
