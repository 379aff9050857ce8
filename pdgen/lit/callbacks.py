"""Training callbacks: a moving average of the weights, and a TensorBoard view of what the model draws.

- `EMA`: a shadow copy of the trainable parameters, updated after every optimizer step (BAGEL keeps one
  too, decay 0.9999; short CPU runs want 0.995, see `docs/training.md`). The shadow is swapped into
  the model for validation and by `EMA.swapped` (export, sampling), and lives in the checkpoint's callback
  state while the raw weights stay the model's state dict, so a resumed fit continues both exactly.
- `TrajectoryLogger`: every `every_n_steps`, in TensorBoard, (1) a trajectory *sampled* from the current
  model for a fixed prompt by the inference loop (`pdgen.inference.generate`: plans, images, inspections,
  until the model stops) as an image strip with its text, and (2) the model's *teacher-forced one-step*
  predictions on the latest training pack: for each noised image the clean image, the noised input at a
  fixed flow time and the estimate `x0 = x_t - t v` decoded to pixels, with the argmax next-token
  prediction over the pack's plan/inspect labels beside the truth. (2) shows learning long before (1) draws
  anything. Both use their own seeds, so logging never changes the training run.

Shapes: N_vae latent tokens, P latent patch dim, (h, w) latent-token grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image

from pdgen.data.packing import PackedBatch
from pdgen.models.bagel.flow import add_noise
from pdgen.models.bagel.trunk import unpatchify_latent


class EMA(Callback):
    def __init__(self, decay: float = 0.995) -> None:
        """Exponential moving average of the trainable parameters.

        Args:
            decay: weight of the old average per optimizer step (0.995 for short CPU runs, BAGEL 0.9999).
        """
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA.decay={decay} must be in (0, 1)")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}

    def _trainable(self, module: LightningModule) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        params = self._trainable(pl_module)
        if not self.shadow:  # a resumed fit already loaded its shadow in `load_state_dict`
            self.shadow = {name: p.detach().clone() for name, p in params.items()}
        self.shadow = {name: t.to(params[name].device) for name, t in self.shadow.items()}

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for name, p in self._trainable(pl_module).items():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @contextmanager
    def swapped(self, module: LightningModule) -> Iterator[None]:
        """Inside the block, `module`'s trainable parameters hold the average; restored afterwards."""
        params = self._trainable(module)
        saved = {name: p.detach().clone() for name, p in params.items() if name in self.shadow}
        with torch.no_grad():
            for name in saved:
                params[name].copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.shadow and not trainer.sanity_checking:
            self._validation_swap = self.swapped(pl_module)
            self._validation_swap.__enter__()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        swap = getattr(self, "_validation_swap", None)
        if swap is not None:
            swap.__exit__(None, None, None)
            self._validation_swap = None

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.decay = state_dict["decay"]
        self.shadow = dict(state_dict["shadow"])


def _to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image."""
    array = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def strip(rows: list[list[Image.Image]], gap: int = 2) -> Image.Image:
    """Rows of equally tall images laid out on a white canvas."""
    height = max(im.height for row in rows for im in row)
    width = max(sum(im.width for im in row) + gap * (len(row) - 1) for row in rows)
    canvas = Image.new("RGB", (width, len(rows) * (height + gap) - gap), "white")
    for r, row in enumerate(rows):
        x = 0
        for im in row:
            canvas.paste(im, (x, r * (height + gap)))
            x += im.width + gap
    return canvas


class TrajectoryLogger(Callback):
    def __init__(
        self,
        every_n_steps: int = 200,
        prompt: str | None = "a photo of a red circle left of a blue square",
        generation: str = "tiny",
        generation_overrides: dict[str, Any] | None = None,
        flow_time: float = 0.7,
        max_images: int = 6,
        seed: int = 0,
    ) -> None:
        """Every `every_n_steps` optimizer steps, log a sampled trajectory and the one-step predictions.

        Args:
            every_n_steps: logging period in optimizer steps.
            prompt: the prompt sampled with `pdgen.inference.generate`; None logs only the one-step view.
            generation: `GenerationConfig` preset of the sampler (image size comes from the packing config).
            generation_overrides: fields of that preset to change, e.g. `{num_timesteps: 20}`.
            flow_time: t at which the noised images are shown and denoised in one step (1 = pure noise).
            max_images: at most this many noised images per strip.
            seed: seed of the logger's own generator (noise of the preview; training RNG is untouched).
        """
        if every_n_steps < 1:
            raise ValueError(f"TrajectoryLogger.every_n_steps={every_n_steps} must be >= 1")
        self.every_n_steps = every_n_steps
        self.prompt = prompt
        self.generation = generation
        self.generation_overrides = dict(generation_overrides or {})
        self.flow_time = flow_time
        self.max_images = max_images
        self.seed = seed

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if (
            step % self.every_n_steps
            or not isinstance(batch, PackedBatch)
            or not batch.mse_loss_indexes.numel()
        ):
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        image, text = self.preview(pl_module, batch)
        experiment.add_image("trajectory/one_step", np.asarray(image), step, dataformats="HWC")
        experiment.add_text("trajectory/one_step_text", text, step)
        datamodule = getattr(trainer, "datamodule", None)
        if self.prompt is not None and getattr(datamodule, "tokenizer", None) is not None:
            image, text = self.sample(pl_module, datamodule.tokenizer, datamodule.packing_config)
            experiment.add_image("trajectory/sampled", np.asarray(image), step, dataformats="HWC")
            experiment.add_text("trajectory/sampled_text", text, step)

    def sample(self, pl_module: LightningModule, tokenizer: Any, packing: Any) -> tuple[Image.Image, str]:
        """(strip of the drawn images, the emitted text) of one generation for `prompt`, in eval mode."""
        from pdgen.inference.config import GenerationConfig
        from pdgen.inference.loop import generate

        side = packing.vae_max_size
        overrides = {"image_size": (side, side), **self.generation_overrides}
        config = GenerationConfig.from_name(self.generation, **overrides)
        was_training = pl_module.training
        pl_module.eval()
        try:
            result = generate(pl_module.trunk, tokenizer, self.prompt, config, self.seed, packing)
        finally:
            pl_module.train(was_training)
        images = result.images or [Image.new("RGB", (side, side), "white")]
        text = f"**{result.stop_reason}**, {len(result.images)} image(s)\n\n`{result.text}`"
        if result.error:
            text += f"\n\nnot a valid trajectory: {result.error}"
        return strip([images]), text

    @torch.no_grad()
    def preview(self, pl_module: LightningModule, batch: PackedBatch) -> tuple[Image.Image, str]:
        """(strip, markdown): a row [clean, noised at `flow_time`, one-step estimate] per noised image."""
        trunk = pl_module.trunk
        generator = torch.Generator().manual_seed(self.seed)
        was_training = pl_module.training
        pl_module.eval()
        try:
            latents = trunk.encode_images(batch.vae_images, generator=generator)
            patch = trunk.config.latent_patch_size
            x0 = trunk.latent_tokens(latents, batch.vae_latent_shapes)  # (N_vae, P)
            noise = torch.randn(x0.shape, generator=generator).to(x0)
            # Noised tokens are exactly the MSE positions; everything else is clean context at t = 0.
            is_noised = torch.isin(batch.packed_vae_token_indexes, batch.mse_loss_indexes)
            times = is_noised.to(x0.dtype) * self.flow_time  # (N_vae,)
            preview = dataclasses.replace(batch, packed_timesteps=times)
            out = trunk(preview, latents=latents, noise=noise)
            velocity = trunk.velocity(out.hidden_states, batch.packed_vae_token_indexes)  # (N_vae, P)
            x_t = add_noise(x0, noise, times)
            estimate = x_t - times[:, None] * velocity  # (N_vae, P)
            rows, start = [], 0
            for grid in batch.vae_latent_shapes:
                n = grid[0] * grid[1]
                span = slice(start, start + n)
                start += n
                if not is_noised[span].all() or len(rows) >= self.max_images:
                    continue
                images = [unpatchify_latent(t[span], tuple(grid), patch)[None] for t in (x0, x_t, estimate)]
                rows.append([_to_pil(trunk.vae.decode(z)[0]) for z in images])
            text = self._text(pl_module, trunk, out.hidden_states, batch)
        finally:
            pl_module.train(was_training)
        return strip(rows or [[Image.new("RGB", (8, 8), "white")]]), text

    @staticmethod
    def _text(pl_module: LightningModule, trunk: Any, hidden: torch.Tensor, batch: PackedBatch) -> str:
        """Teacher-forced argmax vs. truth over the pack's CE labels (as text when a tokenizer is known)."""
        predicted = trunk.lm_logits(hidden, batch.ce_loss_indexes).argmax(-1).tolist()
        truth = batch.packed_label_ids.tolist()
        datamodule = getattr(pl_module._trainer, "datamodule", None)  # None outside a fit
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is None:
            return f"predicted ids: {predicted[:200]}\n\ntruth ids: {truth[:200]}"
        shown = tokenizer.decode(predicted[:400]), tokenizer.decode(truth[:400])
        return f"**predicted**: `{shown[0]}`\n\n**truth**: `{shown[1]}`"
