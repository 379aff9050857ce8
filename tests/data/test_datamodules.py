"""The DataModules: each subset builds its shards and yields one PackedBatch per step; the mixture draws the
subsets by weight; all of them resume at the exact pack and count the samples they skip, by cause."""

import io
import itertools
import logging
import shutil
import tarfile
import time

import lightning as L
import pytest
import torch

from pdgen.data.datamodules import (
    AlignmentDataModule,
    ConflictDataModule,
    MixtureDataModule,
    MultiTurnDataModule,
    PackedTrajectoryDataset,
)
from pdgen.data.packing import PackedBatch
from pdgen.data.shards import ReaderPart
from pdgen.testing.damage import decompression_bomb_png, rewrite_shard
from pdgen.trajectory import Inspect

SMALL = dict(num_trajectories=48, val_size=6, samples_per_shard=8, max_tokens=1024, shuffle_buffer=16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small multi-turn shard set: 6 training shards of 8 trajectories, one validation shard."""
    root = tmp_path_factory.mktemp("multiturn")
    MultiTurnDataModule(root, **SMALL).prepare_data()
    return root


def module(root, **overrides) -> MultiTurnDataModule:
    dm = MultiTurnDataModule(root, **{**SMALL, "num_workers": 0, **overrides})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def fingerprint(batch: PackedBatch) -> tuple:
    """What tells two packs apart: their layout, their tokens and their pixels."""
    pixels = sum(float(image.sum()) for image in batch.vae_images)
    return tuple(batch.sample_lens), tuple(batch.packed_text_ids.tolist()), round(pixels, 3)


def take(loader, n: int) -> list[tuple]:
    iterator = iter(loader)
    return [fingerprint(next(iterator)) for _ in range(n)]


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
    assert sum(len(b.sample_lens) for b in batches) == SMALL["val_size"]
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


def test_prepare_data_refuses_shards_built_differently(built):
    with pytest.raises(ValueError, match="manifest.json holds 'multiturn' shards built with"):
        MultiTurnDataModule(built, **{**SMALL, "augment": 0.5}).prepare_data()


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


def trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, **kwargs,
    )  # fmt: skip


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
    assert lost["too_long"] > 0 and packed + sum(lost.values()) == SMALL["num_trajectories"]

    logger = MetricsRecorder()
    fit = L.Trainer(max_steps=3, accelerator="cpu", logger=logger, log_every_n_steps=1,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                    enable_checkpointing=False)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pdgen.data.datamodules"):
        fit.fit(Recorder(), datamodule=dm)
    assert fit.global_step == 3  # the run went on
    logged = [m for m in logger.metrics if "data/skipped_truncated" in m]
    assert logged and logged[-1]["data/skipped_unreadable_image"] >= 1
    assert any(line.startswith("data: ") and "truncated" in line for line in caplog.messages)


@pytest.mark.parametrize("kind", ["subset", "mixture"])
def test_data_too_long_for_any_pack_is_an_error_not_a_hang(built, conflict_root, kind):
    dm = module(built, max_tokens=64) if kind == "subset" else mixture(built, conflict_root, max_tokens=64)
    started = time.monotonic()
    with pytest.raises(ValueError, match="no pack can be filled: .* longer than max_tokens=64"):
        next(iter(dm.train_dataloader()))
    assert time.monotonic() - started < 30


# ---- the reasoning subsets and the mixture -------------------------------------------------------------

CONFLICT = dict(num_samples=24, val_size=4, samples_per_shard=8)


@pytest.fixture(scope="module")
def conflict_root(tmp_path_factory):
    """A small symbolic conflict set (``root/symbolic``)."""
    root = tmp_path_factory.mktemp("conflict")
    ConflictDataModule(root, **CONFLICT).prepare_data()
    return root


def mixture(built, conflict_root, **overrides) -> MixtureDataModule:
    subsets = {
        "multiturn": MultiTurnDataModule(built, **SMALL),
        "conflict": ConflictDataModule(conflict_root, **CONFLICT),
    }
    options = {"weights": {"multiturn": 1.0, "conflict": 3.0}, "max_tokens": 1024, "num_workers": 0}
    dm = MixtureDataModule(subsets, **{**options, **overrides})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def inspected(trajectory) -> bool:
    """Conflict samples inspect a step; multi-turn ones never do."""
    return any(isinstance(step, Inspect) for step in trajectory.steps)


def test_without_a_checkpoint_the_conflict_set_is_symbolic_and_says_so(conflict_root, caplog):
    with caplog.at_level(logging.INFO, logger="pdgen.data.datamodules"):
        dm = ConflictDataModule(conflict_root, from_ckpt=str(conflict_root / "no-stage1.ckpt"), **CONFLICT)
    assert dm.root == conflict_root / "symbolic" and dm.build_spec.from_ckpt is None
    assert "does not exist" in caplog.text and "using the symbolic conflict set" in caplog.text
    dm.prepare_data()  # the existing symbolic shards are the ones asked for
    dm.setup("fit")
    assert dm.manifest["mode"] == "symbolic" and dm.manifest["stats"]["negative_samples"] > 0
    assert isinstance(next(iter(dm.train_dataloader())), PackedBatch)


def test_the_mixture_draws_subsets_by_weight_before_packing(built, conflict_root):
    dm = mixture(built, conflict_root)
    stream = dm.stream("train")(0, ReaderPart())
    drawn = [inspected(trajectory) for _, trajectory in itertools.islice(stream, 400)]
    assert 0.68 < sum(drawn) / len(drawn) < 0.82  # weight 3 of 4 (24 conflict samples, each read ~12 times)
    pack = next(iter(dm.train_dataloader()))
    assert isinstance(pack, PackedBatch) and len(pack.sample_lens) > 1


def test_the_mixture_resumes_at_the_next_pack(built, conflict_root):
    uninterrupted = take(mixture(built, conflict_root).train_dataloader(), 6)
    resumed = mixture(built, conflict_root)
    resumed.load_state_dict({**resumed.state_dict(), "packs_consumed": 2})
    assert take(resumed.train_dataloader(), 4) == uninterrupted[2:]


def test_a_subset_of_weight_zero_is_validated_but_not_trained_on(built, conflict_root):
    dm = mixture(built, conflict_root, weights={"multiturn": 1.0, "conflict": 0.0})
    trained = [t for _, t in itertools.islice(dm.stream("train")(0, ReaderPart()), 60)]
    assert not any(inspected(t) for t in trained)
    validated = [t for _, t in dm.stream("val")(0, ReaderPart())]
    assert len(validated) == SMALL["val_size"] + CONFLICT["val_size"]
    # The subsets take turns, so a validation capped at a few packs still sees every subset.
    assert [inspected(t) for t in validated[:4]] == [False, True, False, True]
    # One validation loader per subset, so the module logs each subset's losses apart.
    loaders = dict(zip(dm.val_names, dm.val_dataloader(), strict=True))
    assert list(loaders) == ["multiturn", "conflict"]
    assert sum(len(b.sample_lens) for b in loaders["multiturn"]) == SMALL["val_size"]
    assert sum(len(b.sample_lens) for b in loaders["conflict"]) == CONFLICT["val_size"]


def test_validating_on_the_mixture_logs_each_subset_apart(built, conflict_root):
    from pdgen.lit import ProcessDrivenModule

    torch.manual_seed(0)
    dm = mixture(built, conflict_root, weights={"multiturn": 1.0, "conflict": 0.0})
    validator = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_val_batches=1)
    multiturn, conflict = validator.validate(ProcessDrivenModule("embedded"), datamodule=dm)
    assert {"val/multiturn/generate_loss", "val/multiturn/inspect_loss"} <= set(multiturn)
    # The inspector's loss on held-out conflict samples: what Table 7's ablations compare.
    assert "val/conflict/inspect_loss" in conflict and "val/multiturn/loss" not in conflict


def test_the_mixture_counts_corrupt_samples_of_every_subset(built, conflict_root, tmp_path):
    root = tmp_path / "conflict"
    shutil.copytree(conflict_root, root)
    shard = root / "symbolic" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # the shard breaks off in its first sample
    dm = mixture(built, tmp_path / "conflict")
    take(dm.train_dataloader(), 3)
    assert dm.skipped_samples["truncated"] >= 1


def test_the_mixture_refuses_weights_that_do_not_name_its_subsets(built, conflict_root):
    with pytest.raises(ValueError, match="weights names"):
        mixture(built, conflict_root, weights={"multiturn": 1.0, "alignment": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        mixture(built, conflict_root, weights=[0.0, 0.0])


def test_the_alignment_subset_builds_and_packs(tmp_path):
    dm = AlignmentDataModule(tmp_path, num_samples=6, val_size=3, samples_per_shard=3, max_tokens=1024,
                             num_workers=0)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    stats = dm.manifest["stats"]
    assert (stats["positive_samples"], stats["negative_samples"]) == (2, 4)
    assert isinstance(next(iter(dm.train_dataloader())), PackedBatch)


def test_the_single_pass_layout_trains_the_prompt_and_final_image_a_step(built, tmp_path):
    """The single-pass baseline reads the same shards: each sample is its prompt and final image only."""
    from pdgen.lit.module import ProcessDrivenModule, ScheduleConfig

    dm = module(built, layout="single_pass", prompt_dropout=0.0)
    batch = next(iter(dm.train_dataloader()))
    assert batch.split_modes == ["causal", "noise"] * len(batch.sample_lens)
    assert batch.ce_loss_indexes.numel() == 0 and batch.packed_vit_tokens.shape[0] == 0
    model = ProcessDrivenModule("tiny", schedule=ScheduleConfig(warmup_steps=1))
    trainer(1, default_root_dir=tmp_path, enable_checkpointing=False).fit(model, dm)
    loss = float(model.trainer.callback_metrics["train/loss"])
    assert 0 < loss < float("inf")
