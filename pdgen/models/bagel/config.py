"""Architecture configs of the BAGEL trunk: frozen dataclasses and one registry of named presets.

Four configs nest into one:

- `LLMConfig`: the Qwen2 Mixture-of-Transformers language model (understanding + generation expert);
- `ViTConfig`: the SigLIP NaViT vision encoder;
- `AutoEncoderConfig`: the FLUX autoencoder (`ae.safetensors`);
- `BagelConfig`: the three above plus BAGEL's own fields (latent patch size, latent grid size, time shift).

Two presets share every code path: `bagel-7b-mot` (the released BAGEL-7B-MoT) and `tiny` (the same
architecture at a size that trains a step in a fraction of a second on a CPU)::

    config = BagelConfig.from_name("tiny", max_latent_size=8)

A release directory stores the LLM and ViT halves as Hugging Face style `llm_config.json` and
`vit_config.json`; `to_llm_json`/`from_llm_json` (and the ViT pair) translate between the two spellings.
The one trap: SigLIP's `num_hidden_layers` counts the 27 layers of so400m, while BAGEL uses all but the
last (`vit_select_layer = -2`), so `ViTConfig.num_layers` is the json value minus one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LLMConfig:
    """Qwen2 Mixture-of-Transformers language model.

    Args:
        vocab_size: rows of `embed_tokens` and `lm_head` (152,064 in the release: more than the tokenizer
            has, the spare rows take new tokens).
        hidden_size: model width.
        intermediate_size: SwiGLU inner width.
        num_layers: decoder layers.
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention); must divide `num_heads`.
        rope_theta: RoPE base period.
        rms_norm_eps: epsilon of every RMSNorm.
        max_position_embeddings: largest RoPE position the model was trained for (informational).
        qk_norm: RMSNorm on queries and keys per head (BAGEL adds it to Qwen2.5).

    `embed_tokens` and `lm_head` are always separate matrices, as in the release.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    qk_norm: bool = True
    head_dim: int = field(init=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"LLMConfig: hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"LLMConfig: num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}"
            )
        head_dim = self.hidden_size // self.num_heads
        if head_dim % 2:
            raise ValueError(f"LLMConfig: head_dim={head_dim} must be even for RoPE")
        object.__setattr__(self, "head_dim", head_dim)

    def to_llm_json(self) -> dict[str, Any]:
        """The `llm_config.json` document of a BAGEL release for this config."""
        return {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_act": "silu",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "qk_norm": self.qk_norm,
            "tie_word_embeddings": False,
            "layer_module": "Qwen2MoTDecoderLayer",
        }

    @classmethod
    def from_llm_json(cls, doc: dict[str, Any], source: str = "llm_config.json") -> LLMConfig:
        """Reads a release's `llm_config.json` (Hugging Face Qwen2 field names).

        `qk_norm` defaults to True when absent: BAGEL's own Qwen2Config sets it in code, not in the file.
        """
        required = [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        ]
        missing = [name for name in required if name not in doc]
        if missing:
            raise ValueError(f"{source}: missing field(s) {', '.join(missing)}")
        if doc.get("tie_word_embeddings", False):
            raise ValueError(f"{source}: tie_word_embeddings=true, BAGEL's lm_head is a separate matrix")
        if doc.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: hidden_act={doc['hidden_act']!r}, only 'silu' is supported")
        return cls(
            vocab_size=doc["vocab_size"],
            hidden_size=doc["hidden_size"],
            intermediate_size=doc["intermediate_size"],
            num_layers=doc["num_hidden_layers"],
            num_heads=doc["num_attention_heads"],
            num_kv_heads=doc.get("num_key_value_heads", doc["num_attention_heads"]),
            rope_theta=float(doc.get("rope_theta", 10000.0)),
            rms_norm_eps=float(doc.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=doc.get("max_position_embeddings", 32768),
            qk_norm=doc.get("qk_norm", True),
        )


@dataclass(frozen=True)
class ViTConfig:
    """SigLIP NaViT vision encoder as BAGEL uses it (learned absolute positions, no pooling head).

    Args:
        hidden_size: encoder width.
        intermediate_size: MLP inner width.
        num_heads: attention heads; must divide `hidden_size`.
        num_layers: encoder layers *used* (26 for so400m, whose file says 27).
        patch_size: square patch side in pixels; a patch is a `3 * patch_size**2` vector.
        image_size: largest image side; `image_size // patch_size` patches per side at most.
        layer_norm_eps: epsilon of every LayerNorm.
    """

    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_layers: int
    patch_size: int
    image_size: int
    layer_norm_eps: float = 1e-6
    max_patches_per_side: int = field(init=False)
    patch_dim: int = field(init=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ViTConfig: hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig: image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        object.__setattr__(self, "max_patches_per_side", self.image_size // self.patch_size)
        object.__setattr__(self, "patch_dim", 3 * self.patch_size**2)

    def to_vit_json(self) -> dict[str, Any]:
        """The `vit_config.json` document (SigLIP names; `num_hidden_layers` counts the unused last layer)."""
        return {
            "model_type": "siglip_vision_model",
            "hidden_act": "gelu_pytorch_tanh",
            "num_channels": 3,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_heads,
            "num_hidden_layers": self.num_layers + 1,
            "patch_size": self.patch_size,
            "image_size": self.image_size,
            "layer_norm_eps": self.layer_norm_eps,
        }

    @classmethod
    def from_vit_json(cls, doc: dict[str, Any], source: str = "vit_config.json") -> ViTConfig:
        """Reads a release's `vit_config.json`; BAGEL drops the last of `num_hidden_layers` layers."""
        required = [
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_hidden_layers",
            "patch_size",
        ]
        missing = [name for name in required if name not in doc]
        if missing:
            raise ValueError(f"{source}: missing field(s) {', '.join(missing)}")
        if doc["num_hidden_layers"] < 2:
            raise ValueError(
                f"{source}: num_hidden_layers={doc['num_hidden_layers']}, BAGEL uses all but the last layer "
                "so at least 2 are needed"
            )
        return cls(
            hidden_size=doc["hidden_size"],
            intermediate_size=doc["intermediate_size"],
            num_heads=doc["num_attention_heads"],
            num_layers=doc["num_hidden_layers"] - 1,
            patch_size=doc["patch_size"],
            image_size=doc.get("image_size", 980),
            layer_norm_eps=float(doc.get("layer_norm_eps", 1e-6)),
        )


@dataclass(frozen=True)
class AutoEncoderConfig:
    """FLUX autoencoder (`ae.safetensors` layout).

    Args:
        ch: channels of the first level; level `i` has `ch * ch_mult[i]`.
        ch_mult: channel multipliers, one per resolution level; `len(ch_mult) - 1` halvings.
        num_res_blocks: residual blocks per encoder level (the decoder has one more per level).
        z_channels: latent channels (16 for FLUX; BAGEL's `patch_latent_dim` assumes it).
        num_groups: GroupNorm groups (32 in FLUX; a parameter so that a tiny config with few channels works).
        scale_factor: latent scale, `encode` returns `scale * (z - shift)`.
        shift_factor: latent shift.
        in_channels: image channels in.
        out_channels: image channels out.
        kind: ``"flux"`` (the learned FLUX autoencoder) or ``"pixel"`` (`PixelAutoEncoder`: lossless
            space-to-depth, no weights; ``z_channels = in_channels * d**2`` fixes its downsample d, and
            ``ch``/``ch_mult``/``num_res_blocks``/``num_groups`` are unused).
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    num_groups: int = 32
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159
    in_channels: int = 3
    out_channels: int = 3
    kind: str = "flux"
    downsample: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        if self.kind == "pixel":
            side = math.isqrt(self.z_channels // self.in_channels)
            if self.in_channels * side * side != self.z_channels or self.in_channels != self.out_channels:
                raise ValueError(
                    f"AutoEncoderConfig(kind='pixel'): z_channels={self.z_channels} must be "
                    f"in_channels={self.in_channels} times a square (3 * d**2: 12, 48, 192) to be lossless"
                )
            object.__setattr__(self, "downsample", side)
            return
        if self.kind != "flux":
            raise ValueError(f"AutoEncoderConfig.kind={self.kind!r}; expected 'flux' or 'pixel'")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % self.num_groups]
        if bad:
            raise ValueError(
                f"AutoEncoderConfig: channel counts {bad} are not divisible by num_groups={self.num_groups}"
            )
        object.__setattr__(self, "downsample", 2 ** (len(self.ch_mult) - 1))


@dataclass(frozen=True)
class BagelConfig:
    """The whole trunk: language model, vision encoder, autoencoder and BAGEL's glue.

    Args:
        name: preset name (informational; saved with a checkpoint).
        llm: language model config.
        vit: vision encoder config.
        vae: autoencoder config.
        latent_patch_size: latent pixels per side folded into one VAE token (2 in BAGEL).
        max_latent_size: latent-token grid side of `latent_pos_embed` (64 in every released script; the
            class default 32 cannot load the release).
        timestep_shift: flow-time shift used in training (1.0 in pre-training; inference uses 3.0).
    """

    name: str
    llm: LLMConfig
    vit: ViTConfig
    vae: AutoEncoderConfig
    latent_patch_size: int = 2
    max_latent_size: int = 64
    timestep_shift: float = 1.0
    patch_latent_dim: int = field(init=False)
    latent_downsample: int = field(init=False)

    def __post_init__(self) -> None:
        if self.llm.hidden_size % 4:
            raise ValueError(
                f"BagelConfig {self.name!r}: llm.hidden_size={self.llm.hidden_size} must be divisible by 4 "
                "for the 2-D sin-cos position tables"
            )
        object.__setattr__(self, "patch_latent_dim", self.latent_patch_size**2 * self.vae.z_channels)
        object.__setattr__(self, "latent_downsample", self.vae.downsample * self.latent_patch_size)

    def bagel_fields(self) -> dict[str, Any]:
        """BAGEL-level fields that a release keeps in code rather than in a json file."""
        return {
            "name": self.name,
            "latent_patch_size": self.latent_patch_size,
            "max_latent_size": self.max_latent_size,
            "timestep_shift": self.timestep_shift,
        }

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> BagelConfig:
        """A registered preset, with top-level fields replaced by `overrides`."""
        if name not in PRESETS:
            raise ValueError(f"unknown BAGEL preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        return dataclasses.replace(PRESETS[name], **overrides)


# CPU-sized trunk with the same module tree. z_channels stays 16 so patch_latent_dim stays 64;
# the autoencoder keeps its 8x downsampling with three narrow levels.
_TINY = BagelConfig(
    name="tiny",
    llm=LLMConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=176,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        rope_theta=10000.0,
        max_position_embeddings=4096,
    ),
    vit=ViTConfig(
        hidden_size=32, intermediate_size=64, num_heads=2, num_layers=1, patch_size=8, image_size=128
    ),
    vae=AutoEncoderConfig(ch=16, ch_mult=(1, 1, 2, 2), num_res_blocks=1, num_groups=8),
    max_latent_size=16,
)

PRESETS: dict[str, BagelConfig] = {
    # The released BAGEL-7B-MoT: Qwen2.5-7B shapes, SigLIP so400m-14-980 (26 of 27 layers), FLUX AE.
    "bagel-7b-mot": BagelConfig(
        name="bagel-7b-mot",
        llm=LLMConfig(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_layers=28,
            num_heads=28,
            num_kv_heads=4,
            rope_theta=1_000_000.0,
        ),
        vit=ViTConfig(
            hidden_size=1152,
            intermediate_size=4304,
            num_heads=16,
            num_layers=26,
            patch_size=14,
            image_size=980,
        ),
        vae=AutoEncoderConfig(),
        max_latent_size=64,
    ),
    "tiny": _TINY,
    # The embedded default (`configs/full.yaml`): what learns to draw the shapes world in minutes on a CPU.
    # The lossless pixel autoencoder (2x2 pixels -> 12 channels, `pixel_autoencoder.py`) replaces a random
    # FLUX one, whose latents would mean nothing. A latent token is then 4x4 pixels = 48 values, fewer than
    # the hidden width: `llm2vae` (rank <= hidden) can only denoise latent dimensions it can reach.
    # max_latent_size 8 caps images at 32 px (8 x 8 tokens), the size the recipe in
    # docs/training.md ("Why this recipe") trained at; 128 wide and 4 deep as there. The rest (vocabulary,
    # heads, RoPE, the ViT) is `tiny`'s.
    "embedded": dataclasses.replace(
        _TINY,
        name="embedded",
        llm=dataclasses.replace(_TINY.llm, hidden_size=128, intermediate_size=384, num_layers=4),
        vae=AutoEncoderConfig(kind="pixel", z_channels=12),
        max_latent_size=8,
    ),
}
