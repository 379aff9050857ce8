"""Training end to end, in-process: the CLI on the shipped config, exact resume, EMA, the trajectory view."""

import contextlib
import copy

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from world_packs import IN_THIS_PROCESS

from pdgen.cli import main
from pdgen.data.datamodules import MultiTurnDataModule
from pdgen.data.multiturn import MultiTurnSpec
from pdgen.data.packing_config import PackingGeometry
from pdgen.data.reading import ReaderConfig
from pdgen.lit import EMA, AtomicCheckpointIO, ProcessDrivenModule, ScheduleConfig, TrajectoryLogger
from pdgen.models.bagel import BagelConfig


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def fit(module, data, max_steps, ckpt_path=None, root=None):
    """A quiet CPU fit; returns the trainer, the per-step losses and the EMA callback."""
    if ckpt_path is None:
        data.packs_consumed = 0  # a fresh fit starts at the first pack; a resumed one where it stopped
    recorder, ema = LossRecorder(), EMA(decay=0.9)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[recorder, ema],
        default_root_dir=root,
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer, recorder.losses, ema


def test_fit_full_yaml_fast_dev_run_on_the_real_datamodule(tmp_path):
    # The full recipe end to end at toy sizes: the base stage is missing, so it is trained first (two steps
    # of configs/base.yaml on 16 caption pairs, in a child process); the mixture builds its three subsets (the
    # conflict set symbolic, since no stage-1 checkpoint exists) and trains a step from the base checkpoint,
    # reading every subset with the base build's tokenizer. A later `-c` file replaces the `subsets` dict
    # whole, so every subset is spelled out.
    base = tmp_path / "base"
    base_toy = tmp_path / "base_toy.yaml"
    base_toy.write_text(yaml.safe_dump({
        "data": {"init_args": {"root": str(base / "data"), "build": {"num_samples": 16, "val_size": 2,
                               "tokenizer_trajectories": 8, "samples_per_shard": 8},
                               "reader": {"num_workers": 0}}},
        "trainer": {"max_steps": 2, "val_check_interval": 2, "limit_val_batches": 1, "logger": False,
                    "default_root_dir": str(base),  # where LightningCLI writes the child run's config.yaml
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(base), "save_last": True}}]},
    }, sort_keys=False))  # fmt: skip
    small = dict(val_size=2, samples_per_shard=8)
    tokenizer = str(base / "data" / "tokenizer")
    subsets = {
        "multiturn": ("MultiTurnDataModule", dict(num_trajectories=16, augment=0.5), {}),
        "conflict": ("ConflictDataModule", dict(num_samples=8), dict(tokenizer=tokenizer)),
        "alignment": ("AlignmentDataModule", dict(num_samples=9), {}),
    }
    roots = {"multiturn": "mt", "conflict": "conflict", "alignment": "alignment"}
    data = {
        name: {
            "class_path": f"pdgen.data.datamodules.{cls}",
            "init_args": {"root": str(tmp_path / roots[name]), "build": {**small, **build}, **args},
        }
        for name, (cls, build, args) in subsets.items()
    }
    toy = tmp_path / "toy.yaml"
    options = {"subsets": data, "reader": {"num_workers": 0, "max_tokens": 1024}, "tokenizer": tokenizer}
    model = {"init_from": str(base / "last.ckpt"), "init_from_config": ["configs/base.yaml", str(base_toy)]}
    toy.write_text(yaml.safe_dump({"model": {"init_args": model}, "data": {"init_args": options}}))
    runs = str(tmp_path / "runs")
    main(["fit", "-c", "configs/full.yaml", "-c", str(toy), *IN_THIS_PROCESS,
          "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", runs])  # fmt: skip
    built = [tmp_path / "mt", tmp_path / "conflict" / "symbolic", tmp_path / "alignment", base / "data"]
    assert all((root / "manifest.json").is_file() for root in built)
    assert (base / "last.ckpt").is_file()


def test_a_resumed_fit_repeats_the_uninterrupted_one(make_module, world_packs, tmp_path):
    torch.manual_seed(0)
    schedule = ScheduleConfig(warmup_steps=1, steps=4)
    _, straight, ema_straight = fit(make_module(schedule=schedule), world_packs, max_steps=4)

    trainer, first, _ = fit(make_module(schedule=schedule), world_packs, max_steps=2)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = make_module(schedule=ScheduleConfig(warmup_steps=1, steps=4))
    _, rest, ema_resumed = fit(resumed, world_packs, max_steps=4, ckpt_path=tmp_path / "half.ckpt")
    assert len(first) == 2 and len(rest) == 2
    assert first + rest == pytest.approx(straight, abs=1e-6, rel=0)
    for name, value in ema_straight.shadow.items():
        torch.testing.assert_close(ema_resumed.shadow[name], value, atol=1e-6, rtol=0)


class Killed(BaseException):
    """The process dying: Lightning saves nothing more."""


class KillBeforeValidating(Callback):
    """Dies when validation starts at `step`: after `ModelCheckpoint` saved that step, before validating."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_validation_start(self, trainer, pl_module):
        if trainer.global_step == self.step:
            raise Killed


def test_a_run_killed_where_it_checkpoints_and_validates_resumes_exactly(make_module, world_packs, tmp_path):
    # Step 2 is saved (ModelCheckpoint, on_train_batch_end), then validated: the resumed run must repeat
    # the uninterrupted one, which validated at step 2, bit for bit.
    def run(name, *callbacks, ckpt_path=None):
        world_packs.packs_consumed = 0  # a resumed fit reads its position from the checkpoint
        recorder = LossRecorder()
        saver = ModelCheckpoint(tmp_path / name, save_last=True, every_n_train_steps=2)
        trainer = Trainer(accelerator="cpu", max_steps=4, gradient_clip_val=1.0, logger=False,
                          enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                          val_check_interval=2, check_val_every_n_epoch=None, limit_val_batches=1,
                          plugins=[AtomicCheckpointIO()],
                          callbacks=[recorder, EMA(0.9), saver, *callbacks])  # fmt: skip
        module = make_module(schedule=ScheduleConfig(warmup_steps=1, steps=4))
        with contextlib.suppress(Killed):
            trainer.fit(module, datamodule=world_packs, ckpt_path=ckpt_path)
        return recorder.losses

    straight = run("straight")
    first = run("killed", KillBeforeValidating(step=2))
    rest = run("resumed", ckpt_path=tmp_path / "killed" / "last.ckpt")
    assert len(first) == 2 and first + rest == straight  # bit-identical


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A tiny multi-turn shard set, built once, and a factory of DataModules reading it."""
    root = tmp_path_factory.mktemp("multiturn")
    options = dict(
        build=MultiTurnSpec(num_trajectories=16, val_size=2, samples_per_shard=8),
        reader=ReaderConfig(num_workers=0, max_tokens=1024),
        geometry=PackingGeometry.of_trunk(BagelConfig.from_name("embedded")),  # the module's trunk, below
    )
    MultiTurnDataModule(root, **options).prepare_data()
    return lambda: MultiTurnDataModule(root, **options)


def test_a_resumed_fit_on_the_shards_repeats_the_uninterrupted_one(shards, tmp_path):
    # The real data path: shuffling, prompt dropout and packing resume at the pack where the fit stopped.
    def module() -> ProcessDrivenModule:
        torch.manual_seed(0)
        return ProcessDrivenModule("embedded", schedule=ScheduleConfig(warmup_steps=1, steps=4))

    _, straight, _ = fit(module(), shards(), max_steps=4)
    trainer, first, _ = fit(module(), shards(), max_steps=2)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    _, rest, _ = fit(module(), shards(), max_steps=4, ckpt_path=tmp_path / "half.ckpt")
    assert first + rest == pytest.approx(straight, abs=1e-6, rel=0)


def test_ema_is_swapped_in_and_out(make_module):
    module = make_module()
    ema = EMA(decay=0.5)
    ema.shadow = {n: torch.zeros_like(p) for n, p in module.named_parameters() if p.requires_grad}
    weight = module.trunk.llm2vae.weight
    before = weight.detach().clone()
    with ema.swapped(module):
        assert weight.abs().sum() == 0
    assert torch.equal(weight, before)


def test_the_trajectory_view_shows_clean_noised_and_estimated_images(make_module, world_packs):
    module = make_module()
    batch = copy.copy(world_packs.packs[0])
    image, text = TrajectoryLogger(max_images=3).preview(module, batch)
    assert image.height == 3 * 16 + 2 * 2 and image.width == 3 * 16 + 2 * 2
    assert text.startswith("predicted ids:")
    assert torch.isnan(batch.packed_timesteps).any(), "the preview leaves the training batch alone"


def test_the_trajectory_view_samples_with_the_inference_loop(make_module, world_packs):
    module = make_module()
    quick = {"num_timesteps": 2, "max_images": 1, "max_text_tokens": 4}
    logger = TrajectoryLogger(prompt="a photo of a green triangle", generation_overrides=quick)
    image, text = logger.sample(module, world_packs.tokenizer, world_packs.packing_config)
    assert image.height == 16 and text.startswith("**max_")  # a random model hits a cap
