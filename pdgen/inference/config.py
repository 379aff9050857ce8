"""`GenerationConfig`: every knob of the interleaved loop and its flow sampler, with named presets.

Defaults are BAGEL's text-to-image settings (notebook / app preset, reference notes §5.2): 50 timesteps,
shift 3.0, text CFG 4.0, image CFG 1.0 (off), CFG on t in (0.4, 1.0], `global` renorm, greedy text at
temperature 0.3, one text token a pass. Two presets, named like the trunk presets::

    config = GenerationConfig.from_name("tiny", mode="single_pass")

`bagel-7b-mot` draws 1024 x 1024 images; `tiny` draws 64 x 64 with fewer steps and drafts its text by
prompt lookup, for the CPU trunk.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["process", "single_pass"]
RenormType = Literal["global", "channel", "text_channel"]


@dataclass(frozen=True)
class GenerationConfig:
    """How `pdgen.inference.generate` runs.

    Args:
        mode: ``"process"`` (plan, sketch, inspect, refine until the model stops) or ``"single_pass"``
            (the prompt, then one image and no reasoning: the paper's baseline).
        num_timesteps: timesteps of the flow sampler, ``linspace(1, 0, num_timesteps)`` shifted; Euler
            takes ``num_timesteps - 1`` steps between them. The paper counts an image as this many
            sampling steps (BAGEL: 50).
        timestep_shift: s in ``t <- s t / (1 + (s - 1) t)``; larger values spend more steps near noise.
        cfg_text_scale: text guidance; 1.0 turns it off (no extra forward passes).
        cfg_text_drops: what text guidance's unconditional context leaves out: the ``prompt`` (what prompt
            dropout trains) or every ``text``, the prompt and the model's plans and inspections (what text
            dropout trains, ``pdgen.data.sample_layout``; BAGEL's think mode). With ``prompt`` the plan, which
            repeats the prompt, stays in both contexts, and guidance has little to amplify.
        cfg_img_scale: image guidance; 1.0 turns it off. Its unconditional context holds no image.
        cfg_interval: guidance applies at flow times t with ``lo < t <= hi``; plain conditional
            velocity elsewhere.
        cfg_renorm_type: ``global`` (rescale the whole guided velocity to at most the conditional
            velocity's norm), ``channel`` (per token), ``text_channel`` (per token, text guidance only).
        cfg_renorm_min: lower clamp of the renorm factor (0.0 = may shrink all the way).
        do_sample: sample text and control tokens (multinomial at ``temperature``) instead of greedy.
        temperature: softmax temperature when ``do_sample``.
        draft_tokens: prompt-lookup speculative decoding (`pdgen.inference.drafting`): each text pass also
            verifies up to this many tokens drafted from the sequence itself, and keeps those the model
            agrees with. Greedy text is unchanged (up to floating-point ties), sampled text keeps the
            model's distribution (with other draws than one token a pass); 0 decodes one token a pass.
        max_images: the loop stops after drawing this many images (reason ``max_images``); the last one
            is the answer.
        max_text_tokens: text tokens the model may write over the whole generation; reaching it ends the
            generation (reason ``max_text_tokens``).
        image_size: (height, width) in pixels of every drawn image; multiples of the trunk's latent
            downsample (16 in BAGEL) within the packing config's VAE size range.
        inspect: only read when ``PackingConfig.vit_images == "inspected"``. Training then shows an
            inspection exactly after images that carry a ViT copy, so the model cannot choose to inspect;
            when True, every image the model continues from gets its ViT copy and an inspection follows.
            With ``vit_images == "all"`` every image has a ViT copy and the model chooses by what it writes.
        kv_cache: True runs every step over a KV cache (the fast path); False recomputes the whole prefix
            with the packed forward pass at every step (the reference the cache is tested against).
    """

    mode: Mode = "process"
    num_timesteps: int = 50
    timestep_shift: float = 3.0
    cfg_text_scale: float = 4.0
    cfg_text_drops: Literal["prompt", "text"] = "prompt"
    cfg_img_scale: float = 1.0
    cfg_interval: tuple[float, float] = (0.4, 1.0)
    cfg_renorm_type: RenormType = "global"
    cfg_renorm_min: float = 0.0
    do_sample: bool = False
    temperature: float = 0.3
    draft_tokens: int = 0
    max_images: int = 6
    max_text_tokens: int = 1024
    image_size: tuple[int, int] = (1024, 1024)
    inspect: bool = True
    kv_cache: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "cfg_interval", tuple(self.cfg_interval))
        object.__setattr__(self, "image_size", tuple(self.image_size))
        checks = [
            (
                self.mode in ("process", "single_pass"),
                f"mode={self.mode!r}; expected 'process' or 'single_pass'",
            ),
            (self.num_timesteps >= 2, f"num_timesteps={self.num_timesteps} must be at least 2"),
            (self.timestep_shift > 0, f"timestep_shift={self.timestep_shift} must be positive"),
            (self.cfg_text_scale >= 1.0, f"cfg_text_scale={self.cfg_text_scale} must be >= 1.0 (1.0 = off)"),
            (
                self.cfg_text_drops in ("prompt", "text"),
                f"cfg_text_drops={self.cfg_text_drops!r}; expected 'prompt' or 'text'",
            ),
            (self.cfg_img_scale >= 1.0, f"cfg_img_scale={self.cfg_img_scale} must be >= 1.0 (1.0 = off)"),
            (
                len(self.cfg_interval) == 2 and 0.0 <= self.cfg_interval[0] <= self.cfg_interval[1] <= 1.0,
                f"cfg_interval={self.cfg_interval} must be (lo, hi) with 0 <= lo <= hi <= 1",
            ),
            (
                self.cfg_renorm_type in ("global", "channel", "text_channel"),
                f"cfg_renorm_type={self.cfg_renorm_type!r}; expected 'global', 'channel' or 'text_channel'",
            ),
            (0.0 <= self.cfg_renorm_min <= 1.0, f"cfg_renorm_min={self.cfg_renorm_min} must be in [0, 1]"),
            (self.temperature > 0, f"temperature={self.temperature} must be positive"),
            (self.draft_tokens >= 0, f"draft_tokens={self.draft_tokens} must be >= 0 (0 = off)"),
            (self.max_images >= 1, f"max_images={self.max_images} must be at least 1"),
            (self.max_text_tokens >= 1, f"max_text_tokens={self.max_text_tokens} must be at least 1"),
            (
                len(self.image_size) == 2 and min(self.image_size) > 0,
                f"image_size={self.image_size} must be (height, width) in pixels",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"GenerationConfig: {message}")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GenerationConfig:
        """A preset (``bagel-7b-mot`` or ``tiny``, named like the trunk presets) with fields overridden."""
        if name not in GENERATION_PRESETS:
            raise ValueError(
                f"unknown generation preset {name!r}; known presets: {', '.join(sorted(GENERATION_PRESETS))}"
            )
        return dataclasses.replace(GENERATION_PRESETS[name], **overrides)


GENERATION_PRESETS: dict[str, GenerationConfig] = {
    # BAGEL's text-to-image preset at its 1024 px resolution.
    "bagel-7b-mot": GenerationConfig(),
    # The tiny trunk draws at the shapes world's 64 px (a 4 x 4 latent grid); 30 steps were enough for a
    # tiny flow model on this CPU (docs/training.md), a few images and short texts keep it fast.
    # Its text passes are dispatch-bound, so drafting plans by prompt lookup halves their count for little
    # more per pass (docs/benchmarks.md).
    # Its text guidance leaves every text out of the unconditional context (the embedded recipe trains that
    # context with text dropout), so guidance amplifies what the plan asks for. Six images: the background and
    # four objects (ShapesEval counts to four) and one correction. The text budget is above the longest text
    # the embedded recipe trains on (454 tokens: four objects, an inspection and its refine); at 256 a
    # trajectory that inspected and refined was cut off mid-plan and read as unreadable.
    "tiny": GenerationConfig(
        num_timesteps=30,
        max_images=6,
        max_text_tokens=768,
        image_size=(64, 64),
        draft_tokens=8,
        cfg_text_drops="text",
    ),
}
