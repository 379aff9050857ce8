"""`ProcessDrivenModule`: one BAGEL trunk, three heads, the paper's loss, and the fine-tuning options.

A training step takes one `PackedBatch` (a pack of interleaved trajectories, no batch dimension), draws a flow
time per noised image (`pdgen.models.bagel.flow.sample_timesteps`: logit-normal or uniform, then BAGEL's
shift), runs the trunk once and scores the three heads on its hidden states (`pdgen.models.heads`)::

    loss = lambda_ce * CE + lambda_mse * MSE

CE is averaged over *all* CE tokens of the pack (plan + inspect + special; the paper's eq. 3/6), not head by
head; per-head means are logged beside it. Flow times, flow noise and the posterior sample come from the
generator that is a function of (seed, step, rank) alone (`_step_generator`): every rank of a DDP run draws
its own noise (one shared stream gave each rank the same flow times and noise on different images), and with a
deterministic data order a resumed fit repeats the uninterrupted one exactly, with no generator state to save.
Validation draws from its own key (step, loader, batch), so where validation falls (before or after a
checkpoint, every `val_check_interval`) never changes training.

Fine-tuning options (constructor arguments, so `pdgen fit --model.help ProcessDrivenModule` lists them):
full fine-tune, LoRA through peft on chosen modules of either expert, QLoRA (LoRA over a bitsandbytes 4-bit
base), freezing the understanding expert / ViT (the autoencoder is always frozen, as in BAGEL), gradient
checkpointing, the packed-attention implementation. The optimizer is injected (`optimizer:` in a config, e.g.
`bitsandbytes.optim.AdamW8bit` for 8-bit AdamW) and applied to trainable parameters only; the schedule is
linear warm-up then cosine to `schedule.min_lr_ratio`.

Options that belong together are nested config dataclasses, as torchtitan nests its job config: `lora`
(`LoRAConfig`: rank, alpha, dropout, experts) and `schedule` (`ScheduleConfig`: warmup_steps, min_lr_ratio,
steps); a config sets them as `lora: {rank: 16}` and the command line as `--model.init_args.lora.rank 16`.
The module's hyperparameters (and so its checkpoints) hold them as plain dicts, which `weights_only` loading
reads.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from pdgen.data.packing import PackedBatch
from pdgen.data.tokenizer import content_token_ids
from pdgen.models.bagel import BagelConfig, BagelTrunk
from pdgen.models.bagel.flow import TimestepDistribution, sample_timesteps
from pdgen.models.heads import GeneratorHead, HeadLoss, InspectorHead, PlannerHead

log = logging.getLogger(__name__)

FineTune = Literal["full", "lora", "qlora"]
Freezable = Literal["und", "vit", "vae"]
Expert = Literal["und", "gen"]


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters, for `finetune: lora` or `qlora` (peft; scale = alpha / rank).

    Args:
        rank: LoRA rank r.
        alpha: LoRA scale numerator (scale = alpha / r).
        dropout: dropout on the LoRA input.
        experts: which experts' projections get adapters, `und` and/or `gen` (default: both).
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    experts: list[Expert] | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule: linear warm-up, then cosine decay to a floor.

    Args:
        warmup_steps: linear warm-up steps before the cosine decay.
        min_lr_ratio: the cosine schedule ends at this fraction of the peak learning rate.
        steps: length of warm-up + cosine in optimizer steps; None takes the trainer's estimate
            (`max_steps`, or epochs x batches). Set it to stop early on the same schedule.
    """

    warmup_steps: int = 200
    min_lr_ratio: float = 0.0
    steps: int | None = None

    def factor(self, step: int, total: int) -> float:
        """The learning rate at optimizer step `step` as a fraction of the peak, over `total` steps."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(total - self.warmup_steps, 1), 1.0)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _as_config(value: Any, cls: type) -> Any:
    """A group given as its dataclass, or as the plain dict a checkpoint's hyperparameters hold."""
    return cls(**value) if isinstance(value, dict) else value


# The streams of `_step_generator`'s keys: training, keyed by rank; validation, by loader and batch.
TRAIN_STREAM, VALIDATION_STREAM = 0, 1

# LoRA targets per expert (peft full-matches a string target as a regex against module names): the attention
# and MLP projections of the decoder layers. The generation expert's copies carry the `_moe_gen` suffix.
_LAYER = r".*language_model\.model\.layers\.\d+"  # decoder layers only, not the ViT's
LORA_TARGETS = {
    "und": [_LAYER + r"\.self_attn\.[qkvo]_proj", _LAYER + r"\.mlp\.(gate|up|down)_proj"],
    "gen": [_LAYER + r"\.self_attn\.[qkvo]_proj_moe_gen", _LAYER + r"\.mlp_moe_gen\.(gate|up|down)_proj"],
}


def build_trunk(trunk: str, attn_impl: str) -> BagelTrunk:
    """A trunk from a preset name (random init) or a checkpoint directory.

    Args:
        trunk: `BagelConfig` preset name (`embedded`, `tiny`, `bagel-7b-mot`) or a `save_pretrained` /
            release directory.
        attn_impl: packed attention implementation.
    """
    if Path(trunk).is_dir():
        return BagelTrunk.from_pretrained(trunk, attn_impl=attn_impl)
    try:
        config = BagelConfig.from_name(trunk)
    except ValueError as err:
        raise ValueError(
            f"model.trunk={trunk!r} is neither a checkpoint directory nor a preset: {err}"
        ) from None
    return BagelTrunk(config, attn_impl=attn_impl)


DISTRIBUTED_ENV = (
    "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK", "RANK", "GLOBAL_RANK", "LOCAL_RANK",
    "WORLD_SIZE", "LOCAL_WORLD_SIZE",
)  # fmt: skip
"""What Lightning's launcher tells the ranks of a run about their process group."""


def _own_run_env() -> dict[str, str]:
    """This process's environment without its process group: the child `pdgen fit` of a run on several
    ranks would otherwise take itself for one of them and wait for peers that never come."""
    return {name: value for name, value in os.environ.items() if name not in DISTRIBUTED_ENV}


class ProcessDrivenModule(LightningModule):
    def __init__(
        self,
        trunk: str = "embedded",
        vision_start_id: int | None = None,
        lambda_ce: float = 1.0,
        lambda_mse: float = 1.0,
        timestep_shift: float | None = None,
        timestep_distribution: TimestepDistribution = "logit_normal",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: ScheduleConfig = ScheduleConfig(),  # frozen: one shared default is safe
        finetune: FineTune = "full",
        lora: LoRAConfig = LoRAConfig(),
        freeze: list[Freezable] | None = None,
        separate_lm_heads: bool = False,
        gradient_checkpointing: bool = False,
        attn_impl: Literal["sdpa", "flex", "triton"] = "sdpa",
        seed: int = 0,
        init_from: str | None = None,
        init_from_config: str | list[str] | None = None,
    ) -> None:
        """
        Args:
            trunk: `BagelConfig` preset name (random init) or a checkpoint directory (`save_pretrained` or the
                BAGEL-7B-MoT release).
            vision_start_id: the tokenizer's `<|vision_start|>` id (splits SPECIAL labels between planner and
                inspector); None reads it from the datamodule's `tokenizer` at setup.
            lambda_ce: weight of the CE term (BAGEL's code 1.0; the paper reports 0.25).
            lambda_mse: weight of the flow-matching MSE term.
            timestep_shift: shift of the training flow times; None uses the trunk config's (1.0).
            timestep_distribution: training flow times, `logit_normal` (BAGEL's) or `uniform`.
            optimizer: optimizer class or callable over the trainable parameters (AdamW by default;
                `bitsandbytes.optim.AdamW8bit` gives 8-bit AdamW).
            schedule: the learning-rate schedule (`ScheduleConfig`: warmup_steps, min_lr_ratio, steps).
            finetune: `full` (every unfrozen parameter), `lora` (peft adapters, base frozen) or `qlora`
                (adapters over a bitsandbytes 4-bit base).
            lora: the adapters of `lora` and `qlora` (`LoRAConfig`: rank, alpha, dropout, experts).
            freeze: parts kept fixed in a full fine-tune: `und` (understanding expert of the LLM), `vit`
                (SigLIP + connector), `vae` (always frozen anyway).
            separate_lm_heads: give the planner and the inspector each its own copy of `lm_head` instead of
                sharing the trunk's.
            gradient_checkpointing: recompute decoder layers in the backward pass (memory for time).
            attn_impl: packed attention: `sdpa` (dense mask; the CPU training path), `flex`, `triton`.
            seed: seed of the flow times and noise (training and validation keys add the step and the rank).
            init_from: a `pdgen fit` checkpoint whose trunk weights this run starts from (its EMA average
                where it has one): the base stage's, for the paper's recipe. Loaded by key at the start of a
                fit; a checkpoint of another trunk fails naming the keys that differ. A resumed fit
                (`--ckpt_path`) restores its own weights over it.
            init_from_config: the config that trains `init_from` when the file is missing
                (`configs/base.yaml`), or several layered in order: `prepare_data` runs `pdgen fit -c ...` on
                it first, in a child process, and says so in the log.
        """
        super().__init__()
        self.schedule = _as_config(schedule, ScheduleConfig)
        self.lora = _as_config(lora, LoRAConfig)
        # The hyperparameters hold the groups as plain dicts, as LightningCLI records them: a checkpoint with
        # a dataclass in it could not be read with `weights_only=True`. `save_hyperparameters` reads the
        # arguments from this frame, so they are rebound first.
        schedule, lora = dataclasses.asdict(self.schedule), dataclasses.asdict(self.lora)
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer_factory = optimizer
        self.trunk = build_trunk(trunk, attn_impl)
        self.trunk.language_model.model.gradient_checkpointing = gradient_checkpointing
        self.generator_head = GeneratorHead()
        self.planner_head: PlannerHead | None = None
        self.inspector_head: InspectorHead | None = None
        if vision_start_id is not None:
            self._build_language_heads(vision_start_id)
        # The draws of `head_losses` called outside a Trainer (tools, tests); a fit keys its own per step.
        self.noise_generator = torch.Generator().manual_seed(seed)
        self._apply_finetune_mode()
        # Adapter checkpoints hold only the trainable tensors; the base comes from `trunk`.
        self.strict_loading = finetune == "full"
        self._step_started = 0.0

    # ------------------------------------------------------------------------------------ building

    def _build_language_heads(self, vision_start_id: int) -> None:
        def own_head() -> nn.Linear | None:
            if not self.hparams.separate_lm_heads:
                return None
            head = nn.Linear(self.trunk.config.llm.hidden_size, self.trunk.config.llm.vocab_size, bias=False)
            head.weight.data.copy_(self.trunk.language_model.lm_head.weight.data)
            return head

        self.hparams.vision_start_id = vision_start_id
        self.planner_head = PlannerHead(vision_start_id, own_head())
        self.inspector_head = InspectorHead(vision_start_id, own_head())

    def prepare_data(self) -> None:
        """Trains the `init_from` checkpoint first when it is missing and `init_from_config` says how.

        Lightning calls this once per machine, after the datamodule's `prepare_data` and before any `setup`,
        so the base stage's data (and its tokenizer, which the recipe reads its subsets with) exist by then.
        """
        init_from, recipe = self.hparams.init_from, self.hparams.init_from_config
        fitting = self._trainer is None or self.trainer.state.fn == "fit"  # predict reads its own checkpoint
        if init_from is None or Path(init_from).is_file() or not fitting:
            return
        if recipe is None:
            raise ValueError(
                f"model.init_from={init_from!r} does not exist; train it first, or set "
                "model.init_from_config to the config that trains it (configs/base.yaml for the base stage)"
            )
        configs = [recipe] if isinstance(recipe, str) else list(recipe)
        options = [word for config in configs for word in ("-c", str(config))]
        command = f"pdgen fit {' '.join(options)}"
        log.warning("no checkpoint at %s: training it first with `%s`", init_from, command)
        subprocess.run([sys.executable, "-m", "pdgen.cli", "fit", *options], check=True, env=_own_run_env())
        if not Path(init_from).is_file():
            raise ValueError(
                f"`{command}` finished without writing model.init_from={init_from!r}: the config's "
                "checkpoint path and init_from must name the same file"
            )

    @classmethod
    def load_for_sampling(cls, checkpoint: str | Path, map_location: str = "cpu") -> ProcessDrivenModule:
        """The module of a `pdgen fit` checkpoint, in eval mode, with its EMA average where the checkpoint
        holds one: the weights `pdgen predict` samples with. An empty or truncated file is named, not an
        EOFError."""
        from pdgen.lit.checkpoint_io import check_checkpoint_file
        from pdgen.lit.predict import load_ema_weights

        check_checkpoint_file(checkpoint)
        module = cls.load_from_checkpoint(str(checkpoint), map_location=map_location, weights_only=True)
        load_ema_weights(module, checkpoint)
        return module.eval()

    def load_trunk_weights(self, path: str | Path) -> None:
        """Copies the trunk weights of the `pdgen fit` checkpoint `path` into this module's trunk, by key.

        The EMA average is taken where the checkpoint holds one (what `pdgen predict` would sample with), the
        raw weights otherwise; heads share the trunk's `lm_head`, so they come along. LoRA adapters, if this
        module has them, stay as initialised (their base layers take the weights).

        Raises:
            ValueError: `path` is not a checkpoint, or its trunk's keys or shapes differ from this trunk's.
        """
        from pdgen.lit.callbacks import EMA

        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            weights = dict(checkpoint["state_dict"])
        except Exception as err:  # torch raises several types for a file that is not a checkpoint
            raise ValueError(
                f"model.init_from={str(path)!r} is not a readable pdgen checkpoint: {err}"
            ) from err
        ema = checkpoint.get("callbacks", {}).get(EMA().state_key) or {}
        weights.update(ema.get("shadow", {}))
        prefix = "trunk."
        theirs = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        mine = self.trunk.state_dict()
        # peft keeps a wrapped layer's own weight under `base_layer`; the checkpoint names it plainly.
        plain = {name: name.replace(".base_layer.", ".") for name in mine if "lora_" not in name}
        missing = sorted(name for name, key in plain.items() if key not in theirs)
        unexpected = sorted(set(theirs) - set(plain.values()))
        wrong = sorted(n for n, k in plain.items() if k in theirs and theirs[k].shape != mine[n].shape)
        if missing or unexpected or wrong:
            problems = [
                f"{len(keys)} {what} (e.g. {keys[0]!r})"
                for what, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("of another shape", wrong),
                )
                if keys
            ]
            raise ValueError(
                f"model.init_from={str(path)!r} is not a checkpoint of this trunk "
                f"({self.trunk.config.name!r}): its trunk weights have {', '.join(problems)} keys"
            )
        with torch.no_grad():
            for name, key in plain.items():
                mine[name].copy_(theirs[key])
        # Lightning's own channel for what a run starts from, shown like its "GPU available" lines.
        rank_zero_info(f"trunk weights from {path} ({'EMA average' if ema.get('shadow') else 'raw weights'})")

    def setup(self, stage: str) -> None:
        """Loads `init_from`; reads `<|vision_start|>` and the content words off the datamodule's tokenizer.

        The datamodule's packing geometry is the trunk's already: `pdgen fit` links it from `model.trunk`
        (`pdgen.lit.runner.link_trunk_geometry`); a pack of another geometry fails in `_check_geometry`.
        """
        if stage == "fit" and self.hparams.init_from is not None:
            self.load_trunk_weights(self.hparams.init_from)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        tokenizer = getattr(datamodule, "tokenizer", None)
        if self.planner_head is None:
            if tokenizer is None:
                raise ValueError(
                    "ProcessDrivenModule: vision_start_id is not set and the datamodule has no `tokenizer` "
                    "to read it from; pass model.vision_start_id"
                )
            self._build_language_heads(tokenizer.convert_tokens_to_ids("<|vision_start|>"))
        if tokenizer is not None:  # the plan's content words, logged apart (`plan_content_loss`)
            self.planner_head.content_ids = torch.tensor(content_token_ids(tokenizer))

    def _apply_finetune_mode(self) -> None:
        hp = self.hparams
        freeze = set(hp.freeze or [])
        unknown = freeze - {"und", "vit", "vae"}
        if unknown:
            raise ValueError(f"model.freeze: unknown part(s) {sorted(unknown)}; choose from und, vit, vae")
        if hp.finetune not in ("full", "lora", "qlora"):
            raise ValueError(f"model.finetune={hp.finetune!r}; expected full, lora or qlora")
        self.trunk.vae.requires_grad_(False)
        if hp.finetune == "full":
            if "vit" in freeze:
                self.trunk.vit_model.requires_grad_(False)
                self.trunk.connector.requires_grad_(False)
            if "und" in freeze:
                for name, param in self.trunk.language_model.named_parameters():
                    if "_moe_gen" not in name and not name.startswith("lm_head"):
                        param.requires_grad_(False)
            return
        experts = self.lora.experts or ["und", "gen"]
        targets = [pattern for expert in experts for pattern in LORA_TARGETS[expert]]
        if hp.finetune == "qlora":
            from pdgen.lit.quantize import quantize_linear_4bit

            quantize_linear_4bit(self.trunk, "|".join(f"(?:{t})" for t in targets))
        from peft import LoraConfig, inject_adapter_in_model

        self.trunk.requires_grad_(False)
        config = LoraConfig(
            r=self.lora.rank,
            lora_alpha=self.lora.alpha,
            lora_dropout=self.lora.dropout,
            target_modules="|".join(f"(?:{t})" for t in targets),
        )
        inject_adapter_in_model(config, self.trunk)
        for name, param in self.trunk.named_parameters():
            param.requires_grad_("lora_" in name)

    # ---------------------------------------------------------------------------------------- loss

    def head_losses(
        self, batch: PackedBatch, generator: torch.Generator | None = None
    ) -> dict[str, HeadLoss]:
        """Draws flow times into `batch` (from `generator`, default the module's own), runs the trunk once,
        scores the three heads."""
        generator = self.noise_generator if generator is None else generator
        if self.planner_head is None or self.inspector_head is None:
            raise ValueError("ProcessDrivenModule: language heads are not built; pass vision_start_id")
        self._check_geometry(batch)
        shift = self.hparams.timestep_shift or self.trunk.config.timestep_shift
        times = sample_timesteps(
            batch, shift, generator=generator, distribution=self.hparams.timestep_distribution
        )
        batch.packed_timesteps = times.to(self.device)
        noise = torch.randn(
            (batch.packed_vae_token_indexes.numel(), self.trunk.config.patch_latent_dim),
            generator=generator,
        ).to(self.device)
        latents = self.trunk.encode_images(batch.vae_images, generator=generator)
        out = self.trunk(batch, latents=latents, noise=noise)
        return {
            "plan": self.planner_head(self.trunk, out, batch),
            "inspect": self.inspector_head(self.trunk, out, batch),
            "generate": self.generator_head(self.trunk, out, batch),
        }

    def _check_geometry(self, batch: PackedBatch) -> None:
        """A pack built for another trunk geometry fails here with both numbers, not deep inside a reshape."""
        if not batch.vae_images:
            return
        stride = self.trunk.config.latent_downsample
        height = batch.vae_images[0].shape[-2]
        rows = batch.vae_latent_shapes[0][0]
        if height != rows * stride:
            raise ValueError(
                f"pack geometry: an image of {height} px rows is {rows} latent tokens, i.e. "
                f"{height // max(rows, 1)} px per token, but the trunk's latent_downsample is {stride}; "
                "give the packing config the trunk's geometry: packing.for_trunk(trunk.config)"
            )

    def total_loss(self, losses: dict[str, HeadLoss]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, ce, mse): CE averaged over all CE tokens together, MSE over noised tokens."""
        ce_count = losses["plan"].count + losses["inspect"].count
        ce = (losses["plan"].loss_sum + losses["inspect"].loss_sum) / max(ce_count, 1)
        mse = losses["generate"].mean
        return self.hparams.lambda_ce * ce + self.hparams.lambda_mse * mse, ce, mse

    def _shared_step(
        self, batch: PackedBatch, stage: str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        losses = self.head_losses(batch, generator)
        loss, ce, mse = self.total_loss(losses)
        train = stage == "train"
        log = dict(on_step=train, on_epoch=not train, batch_size=1, add_dataloader_idx=False)
        self.log(f"{stage}/loss", loss, prog_bar=True, **log)
        self.log(f"{stage}/ce", ce, **log)
        self.log(f"{stage}/mse", mse, prog_bar=train, **log)
        for name, head in losses.items():
            if head.count:
                self.log(f"{stage}/{name}_loss", head.mean.detach(), **log)
                for metric, value in head.metrics.items():
                    self.log(f"{stage}/{name}_{metric}", value, **log)
        return loss

    def training_step(self, batch: PackedBatch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train", self._step_generator(TRAIN_STREAM, self.global_rank))

    def validation_step(self, batch: PackedBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        # A datamodule with several validation loaders names them (the mixture: one per subset).
        names = getattr(getattr(self.trainer, "datamodule", None), "val_names", None)
        stage = f"val/{names[dataloader_idx]}" if names else "val"
        self._shared_step(batch, stage, self._step_generator(VALIDATION_STREAM, dataloader_idx, batch_idx))

    def _step_generator(self, stream: int, *key: int) -> torch.Generator:
        """Flow times and noise as a function of (seed, step, stream, key) alone: a resumed fit needs no saved
        state to draw what the uninterrupted one drew, and training (keyed by rank) and validation (by loader
        and batch) neither share nor consume each other's draws."""
        words = [self.hparams.seed, self.global_step, stream, *key]
        return torch.Generator().manual_seed(int(np.random.SeedSequence(words).generate_state(1)[0]))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: PackedBatch, batch_idx: int) -> None:
        elapsed = time.perf_counter() - self._step_started
        self.log("train/tokens_per_s", batch.sequence_length / max(elapsed, 1e-9), on_step=True, batch_size=1)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, batch_size=1)

    # ----------------------------------------------------------------------------------- optimizer

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("ProcessDrivenModule: no trainable parameters (check model.freeze / finetune)")
        optimizer = self.optimizer_factory(params)
        total = self.schedule.steps or max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = functools.partial(self.schedule.factor, total=total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --------------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.hparams.finetune != "full":
            # Only what trains is saved: the adapters (and any separate lm heads); the base is `trunk`.
            trainable = {name for name, p in self.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    # ------------------------------------------------------------------------------------------- predict

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """One sample of `pdgen predict` (a `PredictRequest` in, a `Prediction` out), with the checkpoint's
        EMA weights when it has them: `pdgen.lit.predict`."""
        from pdgen.lit.predict import predict

        return predict(self, batch, batch_idx)
