"""Training end to end, in-process: the CLI on the shipped config, exact resume, EMA, the trajectory view."""

import copy

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from pdgen.cli import main
from pdgen.lit import EMA, TrajectoryLogger


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
    main(
        [
            "fit",
            "-c",
            "configs/full.yaml",
            "--data.root",
            str(tmp_path / "shards"),
            "--data.num_trajectories",
            "24",
            "--data.val_size",
            "4",
            "--data.samples_per_shard",
            "12",
            "--data.num_workers",
            "0",
            "--data.max_tokens",
            "1024",
            "--trainer.fast_dev_run",
            "true",
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
        ]
    )
    assert (tmp_path / "shards" / "manifest.json").is_file()


def test_a_resumed_fit_repeats_the_uninterrupted_one(make_module, world_packs, tmp_path):
    torch.manual_seed(0)
    _, straight, ema_straight = fit(make_module(schedule_steps=4, warmup_steps=1), world_packs, max_steps=4)

    trainer, first, _ = fit(make_module(schedule_steps=4, warmup_steps=1), world_packs, max_steps=2)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = make_module(schedule_steps=4, warmup_steps=1)
    _, rest, ema_resumed = fit(resumed, world_packs, max_steps=4, ckpt_path=tmp_path / "half.ckpt")
    assert len(first) == 2 and len(rest) == 2
    assert first + rest == pytest.approx(straight, abs=1e-6, rel=0)
    for name, value in ema_straight.shadow.items():
        torch.testing.assert_close(ema_resumed.shadow[name], value, atol=1e-6, rtol=0)


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
