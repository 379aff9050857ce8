"""`BagelTrunk`: BAGEL's model, layer for layer and key for key, with the FLUX autoencoder beside it.

A packed sequence (`pdgen.data.packing.PackedBatch`) holds three kinds of tokens, each embedded its own way
and scattered into one (T, C) sequence:

- text tokens (including every image's `<|vision_start|>`/`<|vision_end|>` markers): `embed_tokens`;
- ViT tokens of images the model *reads*: SigLIP -> `connector` -> + `vit_pos_embed` (fixed 2-D sin-cos);
- VAE tokens of images the model *draws* or reads back: autoencoder latent, 2x2 latent pixels folded into one
  64-d token, noised to the token's flow time t, -> `vae2llm` + `time_embedder(t)` + `latent_pos_embed`.

Then the Qwen2-MoT decoder runs over the sequence with BAGEL's packed mask (`pdgen.models.mask`);
VAE tokens take the `*_moe_gen` expert, everything else the understanding expert. `forward` returns the
hidden states and, for the noised tokens, the flow target `eps - x0`; `lm_logits` and `velocity` read
the two output heads at given positions. `forward_cached` is the inference path over a `KVCache`.

State dict: every key of `ema.safetensors` under its release name, plus the autoencoder under `vae.`
(saved to `ae.safetensors` without the prefix). The autoencoder is frozen: BAGEL never trains it.

Latent tokens: a latent (Z, h*p, w*p) becomes (h*w, p*p*Z) tokens in row-major grid order, each token
flattened as (row-in-patch, col-in-patch, channel) -- BAGEL's `"chpwq->hwpqc"`.

Shapes: T = packed tokens, C = LLM hidden, V = vocabulary, P = patch_latent_dim (64), Z = z_channels,
N_* = tokens of one kind (text, vit, vae, mse).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from pdgen.models.attention import packed_attention
from pdgen.models.bagel import checkpoint
from pdgen.models.bagel.autoencoder import AutoEncoder
from pdgen.models.bagel.cache import KVCache
from pdgen.models.bagel.config import BagelConfig
from pdgen.models.bagel.embeddings import MLPConnector, PositionEmbedding, TimestepEmbedder
from pdgen.models.bagel.flow import add_noise, velocity_target
from pdgen.models.bagel.pixel_autoencoder import PixelAutoEncoder
from pdgen.models.bagel.qwen2_mot import Qwen2MoTForCausalLM
from pdgen.models.bagel.siglip import SiglipVisionModel

if TYPE_CHECKING:
    from pdgen.data.packing import PackedBatch

INIT_STD = 0.02  # Qwen2's initializer_range, used for every Linear and Embedding of a random trunk


def patchify_latent(latent: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """Latent (Z, >= h*p, >= w*p) -> tokens (h*w, p*p*Z) on an (h, w) grid (extra rows/cols dropped)."""
    h, w = grid
    z = latent.shape[0]
    if latent.shape[1] < h * patch or latent.shape[2] < w * patch:
        raise ValueError(
            f"latent of shape {tuple(latent.shape)} is smaller than a {h}x{w} grid of {patch}-patches"
        )
    x = latent[:, : h * patch, : w * patch].reshape(z, h, patch, w, patch)
    return x.permute(1, 3, 2, 4, 0).reshape(h * w, patch * patch * z)  # (h*w, P)


def unpatchify_latent(tokens: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """Inverse of `patchify_latent`: tokens (h*w, p*p*Z) -> latent (Z, h*p, w*p)."""
    h, w = grid
    z = tokens.shape[1] // (patch * patch)
    x = tokens.reshape(h, w, patch, patch, z).permute(4, 0, 2, 1, 3)  # (Z, h, p, w, p)
    return x.reshape(z, h * patch, w * patch)


class PackEmbedding(NamedTuple):
    """A pack's decoder input: `sequence` (T, C), `gen_mask` (T,) bool, `velocity_target` (N_mse, P)."""

    sequence: torch.Tensor
    gen_mask: torch.Tensor
    velocity_target: torch.Tensor


@dataclass
class TrunkOutput:
    """What one packed forward pass yields.

    Attributes:
        hidden_states: (T, C) final hidden states (after the split final norm).
        velocity_target: (N_mse, P) flow target `eps - x0` at `batch.mse_loss_indexes`, in that order.
    """

    hidden_states: torch.Tensor
    velocity_target: torch.Tensor


def _check_on_cpu(
    tensor: torch.Tensor, is_bad: Callable[[torch.Tensor], torch.Tensor], message: str
) -> None:
    """ValueError(message) when `is_bad(tensor)` holds; checked only on the CPU, where reading it is free.

    On an accelerator, reading a flag back makes the host wait for every queued kernel, once per check and
    step. Packs are built and tested on the CPU, where a malformed one still fails here by name.
    """
    if tensor.device.type == "cpu" and is_bad(tensor):
        raise ValueError(message)


class BagelTrunk(nn.Module):
    def __init__(self, config: BagelConfig, attn_impl: str = "sdpa") -> None:
        """BAGEL's model plus its autoencoder, randomly initialised (zero `llm2vae`, gen expert = und expert).

        Build under `torch.device("meta")` to get the module tree without memory; `from_pretrained` does.

        Args:
            config: architecture, e.g. `BagelConfig.from_name("tiny")`.
            attn_impl: packed attention implementation, `sdpa` (CPU training), `flex` or `triton`.
        """
        super().__init__()
        self.config = config
        self.attn_impl = attn_impl
        c = config.llm.hidden_size
        self.language_model = Qwen2MoTForCausalLM(config.llm)
        self.time_embedder = TimestepEmbedder(c)
        self.vae2llm = nn.Linear(config.patch_latent_dim, c)
        self.llm2vae = nn.Linear(c, config.patch_latent_dim)
        self.latent_pos_embed = PositionEmbedding(config.max_latent_size, c)
        self.vit_model = SiglipVisionModel(config.vit)
        self.connector = MLPConnector(config.vit.hidden_size, c)
        self.vit_pos_embed = PositionEmbedding(config.vit.max_patches_per_side, c)
        # The embedded default swaps in a lossless pixel autoencoder (pixel_autoencoder.py); same interface.
        self.vae = PixelAutoEncoder(config.vae) if config.vae.kind == "pixel" else AutoEncoder(config.vae)
        self.vae.requires_grad_(False)
        self.init_weights()

    # ----------------------------------------------------------------------------------------- init

    def init_module(self, module: nn.Module) -> None:
        """Random init of one module's own parameters (not its children's)."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=INIT_STD)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif hasattr(module, "reset_parameters"):  # norms and the autoencoder's convolutions
            module.reset_parameters()
        if module is self.llm2vae:  # a zero velocity head: training starts from "predict nothing"
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random init of the whole trunk, then the generation expert copied from the understanding expert."""
        for module in self.modules():
            self.init_module(module)
        self.language_model.copy_und_to_gen()

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """Recomputes the derived buffers (2-D sin-cos tables, RoPE frequencies) on `device`."""
        dtype = self.language_model.model.embed_tokens.weight.dtype
        for table in (self.latent_pos_embed, self.vit_pos_embed):
            table.reset_buffers(device, dtype)
        self.language_model.model.rotary_emb.reset_buffers(device)

    # ------------------------------------------------------------------------------------ embedding

    def embed_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(N_text,) ids -> (N_text, C)."""
        return self.language_model.model.embed_tokens(token_ids)

    def embed_vit(
        self, patches: torch.Tensor, position_ids: torch.Tensor, seqlens: torch.Tensor
    ) -> torch.Tensor:
        """Packed ViT patches (N_vit, 3*p*p) of several images -> (N_vit, C) LLM tokens."""
        features = self.vit_model(patches, position_ids, seqlens)  # (N_vit, C_vit)
        return self.connector(features) + self.vit_pos_embed(position_ids)

    def embed_latents(
        self, x_t: torch.Tensor, timesteps: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        """Noisy latent tokens x_t (N_vae, P) at flow times (N_vae,) -> (N_vae, C) LLM tokens."""
        x_t = x_t.to(self.vae2llm.weight.dtype)
        # A time is shared by every token of an image: embed each run of equal times once (a pack of 32 px
        # images embeds 64x fewer rows through the 256-wide time MLP), then give every token its run's row.
        times, run = torch.unique_consecutive(timesteps, return_inverse=True)
        time_embedding = self.time_embedder(times)[run]  # (N_vae, C)
        return self.vae2llm(x_t) + time_embedding + self.latent_pos_embed(position_ids)

    @torch.no_grad()
    def encode_images(
        self, images: list[torch.Tensor], generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Images (3, H, W) in [-1, 1] -> latents (Z, H/8, W/8), sampling the posterior as BAGEL does."""
        dtype = next(self.vae.parameters()).dtype
        if not isinstance(self.vae, PixelAutoEncoder):
            # Image by image: the posterior's noise is drawn in this order from `generator`.
            return [self.vae.encode(image[None].to(dtype), generator=generator)[0] for image in images]
        # The pixel autoencoder is deterministic and per image: one call per image size (a multi-turn pack's
        # 24 images are one call, not 24).
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(i)
        latents: dict[int, torch.Tensor] = {}
        for members in by_size.values():
            encoded = self.vae.encode(torch.stack([images[i] for i in members]).to(dtype))  # (B, Z, h, w)
            latents.update(zip(members, encoded, strict=True))
        return [latents[i] for i in range(len(images))]

    def latent_tokens(self, latents: list[torch.Tensor], grids: list[tuple[int, int]]) -> torch.Tensor:
        """Per-image latents -> concatenated tokens (N_vae, P)."""
        if len(latents) != len(grids):
            raise ValueError(f"{len(latents)} latents but {len(grids)} vae_latent_shapes")
        patch = self.config.latent_patch_size
        return torch.cat([patchify_latent(z, tuple(g), patch) for z, g in zip(latents, grids, strict=True)])

    # ------------------------------------------------------------------------------------- forward

    def embed_pack(
        self,
        batch: PackedBatch,
        latents: list[torch.Tensor] | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PackEmbedding:
        """Embeds every token of a pack into one sequence (the decoder's input); arguments as in `forward`."""
        embed_weight = self.language_model.model.embed_tokens.weight
        num_tokens = batch.sequence_length
        sequence = embed_weight.new_zeros(num_tokens, embed_weight.shape[1])  # (T, C)
        # Rows are placed with `index_copy_`: its backward is an `index_select`, the CPU's faster gather.
        sequence.index_copy_(0, batch.packed_text_indexes, self.embed_text(batch.packed_text_ids))

        if batch.packed_vit_token_indexes.numel():
            vit = self.embed_vit(
                batch.packed_vit_tokens.to(embed_weight.dtype),
                batch.packed_vit_position_ids,
                batch.vit_token_seqlens,
            )
            sequence.index_copy_(0, batch.packed_vit_token_indexes, vit)

        gen_mask = torch.zeros(num_tokens, dtype=torch.bool, device=embed_weight.device)  # (T,)
        target = embed_weight.new_zeros(0, self.config.patch_latent_dim)  # (N_mse, P)
        vae_indexes = batch.packed_vae_token_indexes
        if vae_indexes.numel():
            if latents is None:
                latents = self.encode_images(batch.vae_images, generator)
            x0 = self.latent_tokens(latents, batch.vae_latent_shapes)  # (N_vae, P)
            if x0.shape[0] != vae_indexes.numel():
                raise ValueError(
                    f"vae_latent_shapes give {x0.shape[0]} latent tokens but packed_vae_token_indexes has "
                    f"{vae_indexes.numel()}"
                )
            if noise is None:
                noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            times = batch.packed_timesteps
            _check_on_cpu(
                times,
                lambda t: torch.isnan(t).any(),
                "packed_timesteps holds NaN for noised tokens: draw them with "
                "pdgen.models.bagel.flow.sample_timesteps(batch) before the forward pass",
            )
            latent = self.embed_latents(add_noise(x0, noise, times), times, batch.packed_latent_position_ids)
            sequence.index_copy_(0, vae_indexes, latent)
            gen_mask[vae_indexes] = True
            rows = self._vae_rows(vae_indexes, batch.mse_loss_indexes, num_tokens)
            target = velocity_target(x0, noise)[rows]
        return PackEmbedding(sequence, gen_mask, target)

    def forward(
        self,
        batch: PackedBatch,
        latents: list[torch.Tensor] | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        attn_impl: str | None = None,
    ) -> TrunkOutput:
        """One packed training/validation pass.

        Args:
            batch: the pack; `batch.packed_timesteps` must already hold flow times
                (`pdgen.models.bagel.flow.sample_timesteps`).
            latents: per-image clean latents (Z, h', w') for `batch.vae_images`; encoded with `self.vae`
                when None.
            noise: (N_vae, P) flow noise eps; drawn from `generator` when None.
            generator: random source for the posterior sample and the flow noise.
            attn_impl: overrides `self.attn_impl` for this call.

        Returns:
            hidden states (T, C) and the flow target at `batch.mse_loss_indexes`.
        """
        embedded = self.embed_pack(batch, latents, noise, generator)
        meta = batch.attention_meta()
        impl = attn_impl or self.attn_impl

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return packed_attention(q, k, v, meta, impl=impl)

        hidden = self.language_model.model(
            embedded.sequence, batch.packed_position_ids, embedded.gen_mask, attend
        )
        return TrunkOutput(hidden_states=hidden, velocity_target=embedded.velocity_target)

    @staticmethod
    def _vae_rows(vae_indexes: torch.Tensor, mse_indexes: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Row of each MSE position among the VAE tokens (so targets line up with `mse_loss_indexes`)."""
        row_of_position = torch.full((num_tokens,), -1, dtype=torch.long, device=vae_indexes.device)
        row_of_position[vae_indexes] = torch.arange(vae_indexes.numel(), device=vae_indexes.device)
        rows = row_of_position[mse_indexes]
        _check_on_cpu(
            rows,
            lambda r: (r < 0).any(),
            "mse_loss_indexes point at tokens that are not in packed_vae_token_indexes",
        )
        return rows

    def forward_cached(
        self,
        embeds: torch.Tensor,
        position_ids: torch.Tensor,
        gen_mask: torch.Tensor,
        cache: KVCache,
        causal: bool,
        update_cache: bool = True,
    ) -> torch.Tensor:
        """Inference: one query block over `cache` (see `pdgen.models.bagel.cache`).

        Args:
            embeds: (Q, C) embedded block (`embed_text`, `embed_vit`, `embed_latents`).
            position_ids: (Q,) RoPE positions.
            gen_mask: (Q,) bool, True for VAE tokens.
            cache: the context; grows by the block when `update_cache`.
            causal: causal inside the block (text) or bidirectional (an image block).
            update_cache: append the block's keys and values (False while denoising).

        Returns:
            (Q, C) hidden states.
        """
        return self.language_model.model(
            embeds, position_ids, gen_mask, cache.attend_fn(causal, update_cache)
        )

    def new_cache(self) -> KVCache:
        return KVCache(self.config.llm.num_layers)

    # ---------------------------------------------------------------------------------------- heads

    def lm_logits(self, hidden_states: torch.Tensor, indexes: torch.Tensor) -> torch.Tensor:
        """(T, C) hidden states -> (N, V) next-token logits at `indexes` (N,)."""
        return self.language_model.lm_head(hidden_states[indexes])

    def velocity(self, hidden_states: torch.Tensor, indexes: torch.Tensor) -> torch.Tensor:
        """(T, C) hidden states -> (N, P) predicted velocity at `indexes` (N,), read at the noisy tokens."""
        return self.llm2vae(hidden_states[indexes])

    # ----------------------------------------------------------------------------------- checkpoints

    @classmethod
    def check_directory(cls, directory: str | Path) -> tuple[BagelConfig, checkpoint.KeyReport]:
        """Config and key report of a checkpoint directory, from its json files and safetensors headers."""
        directory = Path(directory)
        config = checkpoint.load_config(directory)
        with torch.device("meta"):
            expected = checkpoint.expected_shapes(cls(config))
        return config, checkpoint.compare_keys(expected, checkpoint.checkpoint_shapes(directory))

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        strict: bool = True,
        attn_impl: str = "sdpa",
    ) -> BagelTrunk:
        """Loads a BAGEL release directory (or a `save_pretrained` one) into a trunk built on the meta device.

        Args:
            directory: checkpoint directory (layout in `pdgen.models.bagel.checkpoint`).
            dtype: parameter dtype (e.g. torch.bfloat16 for 7B); None keeps each tensor's stored dtype.
            device: where the parameters are materialised.
            strict: raise `CheckpointError` on any key problem; with False, log the report and give affected
                modules a fresh random init.
            attn_impl: packed attention implementation of the returned trunk.
        """
        directory = Path(directory)
        config, report = cls.check_directory(directory)
        source = f"checkpoint {directory} vs. its config ({config.name!r})"
        if not report.ok:
            if strict:
                hint = "\n(pass strict=False to load the rest)"
                raise checkpoint.CheckpointError(report.format(source) + hint)
            checkpoint.log.warning("%s", report.format(source))  # the checkpoint module's logger, as before

        with torch.device("meta"):
            model = cls(config, attn_impl=attn_impl)
        device = torch.device(device)
        skip = checkpoint.FIXED_TABLES | set(report.mismatched) | set(report.unexpected)
        state = checkpoint.read_state(directory, skip, dtype, device)
        model.load_state_dict(state, strict=False, assign=True)
        del state
        model._materialise_leftovers(device, dtype or model.language_model.model.embed_tokens.weight.dtype)
        model.reset_buffers(device)
        model.vae.requires_grad_(False)
        return model

    def _materialise_leftovers(self, device: torch.device, dtype: torch.dtype) -> None:
        """Gives modules whose parameters stayed on `meta` (keys skipped with strict=False) a fresh init."""
        for module in self.modules():
            own = list(module.parameters(recurse=False))
            if any(p.is_meta for p in own):
                module.to_empty(device=device, recurse=False)
                with torch.no_grad():
                    self.init_module(module)
                for p in module.parameters(recurse=False):
                    p.data = p.data.to(dtype)

    def save_pretrained(self, directory: str | Path) -> None:
        """Writes the release layout (configs, `ema.safetensors`, `ae.safetensors`) atomically."""
        checkpoint.save_checkpoint(directory, self.config, self.state_dict())
