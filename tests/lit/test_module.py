"""`ProcessDrivenModule` without a Trainer: the loss it optimises and what each fine-tuning option trains."""

import copy
import os
from unittest import mock

import pytest
import torch

from pdgen.lit.module import LORA_TARGETS, LoRAConfig, ScheduleConfig


def test_loss_is_ce_over_all_ce_tokens_plus_mse(make_module, world_packs):
    module = make_module(lambda_ce=0.25, lambda_mse=1.0)
    batch = copy.copy(world_packs.packs[0])
    losses = module.head_losses(batch)
    loss, ce, mse = module.total_loss(losses)
    plan, inspect = losses["plan"], losses["inspect"]
    expected_ce = (plan.loss_sum + inspect.loss_sum) / (plan.count + inspect.count)
    torch.testing.assert_close(ce, expected_ce)
    torch.testing.assert_close(loss, 0.25 * ce + mse)
    assert plan.count + inspect.count == batch.packed_label_ids.numel()
    assert not torch.isnan(batch.packed_timesteps).any(), "the module drew the flow times"


def test_the_module_generator_makes_steps_repeatable(make_module, world_packs):
    first, second = make_module(seed=3), make_module(seed=3)
    a = first.total_loss(first.head_losses(copy.copy(world_packs.packs[0])))[0]
    b = second.total_loss(second.head_losses(copy.copy(world_packs.packs[0])))[0]
    assert a.item() == b.item()


def test_each_rank_draws_its_own_flow_times_and_a_step_always_draws_the_same(make_module, world_packs):
    module = make_module(seed=3)

    def flow_times(rank: int) -> torch.Tensor:
        batch = copy.copy(world_packs.packs[0])
        with mock.patch.object(type(module), "global_rank", mock.PropertyMock(return_value=rank)):
            module.training_step(batch, 0)
        return batch.packed_timesteps

    assert torch.equal(flow_times(0), flow_times(0)), "a resumed step draws what the first run drew"
    assert not torch.equal(flow_times(0), flow_times(1)), "DDP ranks do not share their noise"


def test_freezing_the_understanding_expert_and_vit_leaves_the_generation_expert(make_module):
    module = make_module(freeze=["und", "vit"])
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert "trunk.language_model.model.layers.0.self_attn.q_proj_moe_gen.weight" in trainable
    assert "trunk.language_model.model.layers.0.self_attn.q_proj.weight" not in trainable
    frozen_parts = ("trunk.vit_model.", "trunk.connector.", "trunk.vae.")
    assert not any(name.startswith(frozen_parts) for name in trainable)
    assert "trunk.llm2vae.weight" in trainable and "trunk.language_model.lm_head.weight" in trainable
    with pytest.raises(ValueError, match="unknown part\\(s\\) \\['llm'\\]"):
        make_module(freeze=["llm"])


@pytest.mark.parametrize("expert", ["und", "gen"])
def test_lora_targets_one_expert_by_name(make_module, expert):
    module = make_module(finetune="lora", lora=LoRAConfig(rank=4, experts=[expert]))
    trainable = [name for name, p in module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    adapted = {name.split(".lora_")[0] for name in trainable}
    assert len(adapted) == 7 * module.trunk.config.llm.num_layers, "q, k, v, o, gate, up, down per layer"
    assert all(("_moe_gen" in name) == (expert == "gen") for name in adapted), sorted(adapted)
    assert len(LORA_TARGETS[expert]) == 2


def test_lora_trains_only_adapters_and_merging_gives_base_plus_adapter(make_module, world_packs):
    base = make_module()
    module = make_module(finetune="lora", lora=LoRAConfig(rank=4, alpha=8.0))
    frozen_before = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        module.total_loss(module.head_losses(copy.copy(world_packs.packs[0])))[0].backward()
        optimizer.step()
    for name, param in module.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, frozen_before[name]), f"{name} changed"

    layer = module.trunk.language_model.model.layers[0].self_attn.q_proj
    base_weight = base.trunk.language_model.model.layers[0].self_attn.q_proj.weight
    delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * (8.0 / 4)
    assert delta.abs().sum() > 0, "the adapter trained"
    batch = copy.copy(world_packs.packs[1])
    module.eval()
    with torch.no_grad():
        module.noise_generator.manual_seed(0)
        unmerged = module.total_loss(module.head_losses(batch))[0]
        for submodule in module.modules():
            if hasattr(submodule, "merge") and hasattr(submodule, "lora_A"):
                submodule.merge()
        torch.testing.assert_close(layer.base_layer.weight, base_weight + delta)
        module.noise_generator.manual_seed(0)
        merged = module.total_loss(module.head_losses(batch))[0]
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)


def test_lora_checkpoints_hold_only_the_adapters(make_module):
    module = make_module(finetune="lora", lora=LoRAConfig(rank=4))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and all("lora_" in key for key in checkpoint["state_dict"])


def test_qlora_quantizes_the_base_and_trains_adapters_on_cpu(make_module, world_packs):
    module = make_module(finetune="qlora", lora=LoRAConfig(rank=4, experts=["gen"]))
    layer = module.trunk.language_model.model.layers[0].mlp_moe_gen.up_proj
    assert type(layer.base_layer).__name__ == "Linear4bit"
    loss = module.total_loss(module.head_losses(copy.copy(world_packs.packs[0])))[0]
    loss.backward()
    assert layer.lora_B["default"].weight.grad is not None


def test_the_schedule_warms_up_then_decays_to_the_floor(make_module):
    module = make_module(schedule=ScheduleConfig(warmup_steps=2, min_lr_ratio=0.1, steps=10))
    optimizer = module.configure_optimizers()
    scheduler = optimizer["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(12):
        lrs.append(scheduler.get_last_lr()[0] / 1e-3)
        optimizer["optimizer"].step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))


def test_the_groups_are_plain_dicts_in_the_hyperparameters_and_given_as_dicts_too(make_module, tmp_path):
    module = make_module(schedule=ScheduleConfig(warmup_steps=3), lora={"rank": 4, "experts": ["gen"]})
    assert module.schedule == ScheduleConfig(warmup_steps=3)
    assert module.lora == LoRAConfig(rank=4, experts=["gen"])
    assert module.hparams.schedule == {"warmup_steps": 3, "min_lr_ratio": 0.0, "steps": None}
    assert module.hparams.lora == {"rank": 4, "alpha": 32.0, "dropout": 0.0, "experts": ["gen"]}
    torch.save({"hyper_parameters": dict(module.hparams)}, tmp_path / "hparams.pt")
    torch.load(tmp_path / "hparams.pt", weights_only=True)  # what `--ckpt_path` reads them back with


def test_a_checkpoint_with_the_flat_arguments_of_old_reads_into_the_groups():
    from jsonargparse import Namespace

    from pdgen.lit.runner import nest_legacy_hparams

    model = Namespace(class_path="pdgen.lit.ProcessDrivenModule")
    model["init_args.schedule.warmup_steps"] = 100
    model["dict_kwargs"] = {"warmup_steps": 7, "schedule_steps": 50, "lora_rank": 4, "lora_experts": ["gen"]}
    nest_legacy_hparams(model)
    assert model["init_args.schedule.warmup_steps"] == 7 and model["init_args.schedule.steps"] == 50
    assert model["init_args.lora.rank"] == 4 and model["init_args.lora.experts"] == ["gen"]
    assert model["dict_kwargs"] == {}


def test_model_help_lists_every_field_of_the_groups(capsys):
    from pdgen.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "pdgen.lit.ProcessDrivenModule"])
    out = capsys.readouterr().out
    for field in ("schedule.warmup_steps", "schedule.min_lr_ratio", "schedule.steps"):
        assert f"--model.{field}" in out
    for field in ("rank", "alpha", "dropout", "experts"):
        assert f"--model.lora.{field}" in out


def test_an_injected_8bit_adamw_gets_only_trainable_parameters(make_module, world_packs):
    import bitsandbytes as bnb

    module = make_module(
        freeze=["vit"],
        schedule=ScheduleConfig(steps=10),
        optimizer=lambda params: bnb.optim.AdamW8bit(params, lr=1e-3),
    )
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, bnb.optim.AdamW8bit)
    given = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert given == {id(p) for p in module.parameters() if p.requires_grad}
    assert not any(id(p) in given for p in module.trunk.vit_model.parameters())
    module.total_loss(module.head_losses(copy.copy(world_packs.packs[0])))[0].backward()
    before = module.trunk.llm2vae.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(module.trunk.llm2vae.weight, before)


def _fit_checkpoint(module, path, ema_shift: float | None = None) -> None:
    """A checkpoint as `pdgen fit` writes it: the state dict, and the EMA callback's average when given
    (here the weights shifted by `ema_shift`, to tell the two apart)."""
    from pdgen.lit.callbacks import EMA

    checkpoint = {"state_dict": module.state_dict(), "callbacks": {}}
    if ema_shift is not None:
        shadow = {n: p.detach() + ema_shift for n, p in module.named_parameters() if p.requires_grad}
        checkpoint["callbacks"][EMA().state_key] = {"decay": 0.9, "shadow": shadow}
    torch.save(checkpoint, path)


def test_init_from_loads_the_trunk_by_key_and_prefers_the_ema_average(make_module, tmp_path):
    trained = make_module()
    with torch.no_grad():
        for p in trained.trunk.parameters():
            p.add_(0.5)
    _fit_checkpoint(trained, tmp_path / "base.ckpt", ema_shift=1.0)

    fresh = make_module(init_from=str(tmp_path / "base.ckpt"))
    fresh.load_trunk_weights(tmp_path / "base.ckpt")
    name = "language_model.model.layers.0.self_attn.q_proj_moe_gen.weight"
    mine, theirs = fresh.trunk.state_dict()[name], trained.trunk.state_dict()[name]
    torch.testing.assert_close(mine, theirs + 1.0)  # the EMA average, not the raw weights
    _fit_checkpoint(trained, tmp_path / "raw.ckpt")
    fresh.load_trunk_weights(tmp_path / "raw.ckpt")
    torch.testing.assert_close(fresh.trunk.state_dict()[name], theirs)


def test_init_from_a_checkpoint_of_another_trunk_fails_naming_it(make_module, tmp_path):
    from pdgen.lit.module import ProcessDrivenModule

    _fit_checkpoint(ProcessDrivenModule("tiny", vision_start_id=3), tmp_path / "tiny.ckpt")
    with pytest.raises(
        ValueError, match=r"tiny\.ckpt.*not a checkpoint of this trunk \('embedded'\).*of another shape"
    ):
        make_module().load_trunk_weights(tmp_path / "tiny.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.ckpt.*not a readable pdgen checkpoint"):
        make_module().load_trunk_weights(tmp_path / "text.ckpt")


def test_a_missing_init_from_is_trained_first_or_named(make_module, tmp_path, monkeypatch):
    import subprocess

    missing = tmp_path / "runs" / "base.ckpt"
    with pytest.raises(ValueError, match=r"base\.ckpt' does not exist.*init_from_config"):
        make_module(init_from=str(missing)).prepare_data()

    ran, envs = [], []

    def fake_fit(command, check, env):  # the child `pdgen fit -c configs/base.yaml`: writes the checkpoint
        ran.append(command[-3:])
        envs.append(env)
        missing.parent.mkdir(parents=True)
        _fit_checkpoint(make_module(), missing)

    # Rank 0 of a run on two ranks: the child must start a run of its own, not join this one's group.
    for name, value in {"LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "12910"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(subprocess, "run", fake_fit)
    make_module(init_from=str(missing), init_from_config="configs/base.yaml").prepare_data()
    assert ran == [["fit", "-c", "configs/base.yaml"]] and missing.is_file()
    [env] = envs
    assert not {"LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"} & set(env) and env["PATH"] == os.environ["PATH"]


def test_lightning_moves_a_pack_to_the_device_with_its_own_to(world_packs) -> None:
    # No `transfer_batch_to_device` override is needed (one on the module made Lightning warn on every
    # run): Lightning's default calls `.to(device)` on any batch object that has one.
    from lightning.fabric.utilities import move_data_to_device

    moved = move_data_to_device(world_packs.packs[0], torch.device("meta"))
    assert moved.packed_text_ids.is_meta and all(image.is_meta for image in moved.vae_images)
    assert moved.sample_lens == world_packs.packs[0].sample_lens
