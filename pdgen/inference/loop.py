"""`generate`: the paper's interleaved loop (Section 3.3) on a `BagelTrunk`, in training's exact layout.

One prompt becomes one growing sequence, in the layout of ``pdgen.data.packing`` (BAGEL's framing, no chat
headers; RoPE id r)::

    [<|vision_start|> clean latents <|vision_end|> <|vision_start|> ViT <|vision_end|>]   an image to edit
    <|im_start|> prompt <|im_end|>                              ids r .. r+n-1
    <|im_start|> <ins>…</ins><des>…</des> <|im_end|>            a plan, written token by token
      └ decision at its <|im_end|>: <|vision_start|> = draw, <|im_start|> = more text
    <|vision_start|> h·w noisy latents <|vision_end|>           query at id r, never written
    <|vision_start|> h·w clean latents <|vision_end|>           the decoded image re-encoded, t = 0, id r
    [<|vision_start|> ViT patches <|vision_end|>]               id r+1, where training adds a ViT copy
      └ decision at the image's last token: <|im_start|> = continue, <|im_end|> = stop (the answer)
    <|im_start|> critique [<refine>…</refine>] <|im_end|>      an inspection, then a plan (or a Refine) …

Decisions are taken from the logits at a segment's last token, restricted to the tokens that may follow
it there (a text segment: draw or more text; an image: continue or stop). After the prompt training
always starts a plan, so ``<|im_start|>`` is fed without asking. Inside a text segment the only control
token the model may write is the closing ``<|im_end|>`` (training never shows another one there), and
only ids the tokenizer has (the embedding has spare rows). The stop rule is ``pdgen.trajectory``'s:
``<|im_end|>`` right after ``<|vision_end|>`` ends the generation.

Which images get a ViT copy follows ``PackingConfig.vit_images``: ``"all"`` writes one after every image
and reads the decision after it; ``"inspected"`` reads the decision after the clean VAE copy and, when
the model continues and ``GenerationConfig.inspect`` is set, writes the ViT copy and lets an inspection
follow (training shows an inspection exactly after a ViT copy).

Caps: ``max_images`` (stop after that image, the answer) and ``max_text_tokens`` (over the whole
generation, texts taken back included: they were generated; the unfinished text is kept and reported). A
`Controller` may take decisions or write texts, and a `Reviewer` replace a text the model wrote before the
loop goes on (``pdgen.inference.control``). Randomness (text sampling, noise, the autoencoder's posterior
sample when an image is written back) comes from one ``torch.Generator`` seeded per prompt, so a seed
reproduces a run.

Shapes: N = latent tokens of one image (h·w), P = latent patch dim (64), C = LLM hidden, V = vocabulary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

# Training's own image resize, patch order and 2-D position ids: the loop must feed images exactly as
# packing does.
from pdgen.data.packing import PackingConfig, grid_position_ids, image_grid, image_pixels, patchify
from pdgen.data.packing_config import PackingGeometry
from pdgen.data.tokenizer import CONTROL_TOKENS, SpecialTokenIds, encode_text
from pdgen.inference.config import GenerationConfig
from pdgen.inference.context import Block, Contexts
from pdgen.inference.control import Controller, LoopState, ModelDecides, Reviewer
from pdgen.inference.costs import Costs
from pdgen.inference.drafting import accept_draft, lookup_draft, pick
from pdgen.inference.sampler import euler_sample, guidance_on, guide
from pdgen.models.bagel import BagelTrunk
from pdgen.models.bagel.trunk import patchify_latent, unpatchify_latent
from pdgen.trajectory import (
    ASSISTANT_TURN,
    IM_END,
    IM_START,
    IMAGE_PAD,
    TAG_PATTERN,
    USER_TURN,
    VISION_END,
    VISION_START,
    Trajectory,
    TrajectoryError,
)

VISION_BLOCK = VISION_START + IMAGE_PAD + VISION_END
"""An image in the tagged text."""

LOOKUP_NGRAM = 3
"""Longest n-gram a draft is looked up by: plans repeat phrases of three tokens and more, and a longer match
is tried first, so a longer limit only costs lookup time."""

StopReason = Literal["stop_token", "max_images", "max_text_tokens", "single_pass"]


@dataclass
class Generation:
    """What `generate` returns for one prompt.

    Attributes:
        prompt: the prompt.
        text: everything emitted, as tagged text in `Trajectory.to_text`'s frame (the k-th
            ``<|image_pad|>`` is ``images[k]``); it ends with ``<|im_end|>`` when the loop stopped after an
            image, and is kept as the model wrote it when it is not a valid trajectory.
        images: every image drawn, in order (an input image is not one of them).
        token_ids: the control and text tokens of the sequence in order: each text segment with its
            ``<|im_start|>``/``<|im_end|>``, ``<|vision_start|>``/``<|vision_end|>`` per image (one pair,
            however many copies), the final ``<|im_end|>`` when the model stopped.
        trajectory: `text` parsed (plans, sketches, inspections, refines); None in single-pass mode and
            when the output is not a valid trajectory (then `error` says why).
        error: why `text` is not a valid trajectory, naming where and what the model emitted there.
        stop_reason: ``stop_token`` (the model's ``<|im_end|>`` after an image), ``max_images``,
            ``max_text_tokens`` or ``single_pass``.
        costs: what the generation cost.
        seed: the seed it ran with.
    """

    prompt: str
    text: str
    images: list[Image.Image]
    token_ids: list[int]
    trajectory: Trajectory | None
    error: str | None
    stop_reason: StopReason
    costs: Costs
    seed: int

    @property
    def final_image(self) -> Image.Image | None:
        """The answer: the last image drawn (None if the generation stopped before drawing one)."""
        return self.images[-1] if self.images else None


# Inference mode, not just no_grad: it also skips autograd's version counting and view tracking on every op,
# which is a fifth of a one-token pass of a small trunk (the process decodes its text token by token).
@torch.inference_mode()
def generate(
    trunk: BagelTrunk,
    tokenizer: Any,
    prompt: str,
    config: GenerationConfig,
    seed: int,
    packing: PackingConfig,
    *,
    controller: Controller | None = None,
    input_image: Image.Image | None = None,
) -> Generation:
    """Generates an image for `prompt` by the paper's interleaved loop (or one pass, ``config.mode``).

    Args:
        trunk: the model (its mode is left as it is; it runs under ``torch.inference_mode``, so no
            gradients are recorded and nothing the loop returns holds a tensor).
        tokenizer: the tokenizer the trunk was trained with (``pdgen.data.tokenizer``).
        prompt: the user's request: not empty, no tag-like strings (``<ins>``, ``<|im_end|>``).
        config: sampler, guidance, decoding and caps (``GenerationConfig.from_name("tiny")``).
        seed: seeds the one random generator of the run; the same seed gives the same result.
        packing: the packing config the trunk was trained with; it fixes how images are written back
            (resize, ViT copies), so inference mirrors training.
        controller: takes decisions or writes texts in place of the model (tests, external planner or
            inspector); default: the model does everything.
        input_image: an image to edit. It opens the sequence as in training (clean VAE copy, then ViT copy,
            before the prompt), is the one image the image-unconditional context lacks from the start, and
            is the trajectory's `input_image` (not one of `Generation.images`).

    Returns:
        a `Generation`: the tagged text, images, parsed trajectory (or the reason it is invalid), costs.

    Raises:
        ValueError: an unusable prompt, an image size the trunk or packing config cannot take, a packing
            config that does not match the trunk, or a controller decision that is not an option.
    """
    started = time.perf_counter()
    loop = _Loop(trunk, tokenizer, prompt, input_image, config, packing, controller or ModelDecides(), seed)
    generation = loop.run()
    generation.costs.wall_time_s = time.perf_counter() - started
    return generation


class _Loop:
    """The state of one generation: the contexts, what was emitted, the random generator and the costs."""

    def __init__(
        self,
        trunk: BagelTrunk,
        tokenizer: Any,
        prompt: str,
        input_image: Image.Image | None,
        config: GenerationConfig,
        packing: PackingConfig,
        controller: Controller,
        seed: int,
    ) -> None:
        if not prompt or (tag := TAG_PATTERN.search(prompt)):
            found = "is empty" if not prompt else f"contains the tag-like string {tag.group()!r}"
            raise ValueError(f"generate: the prompt {found}; prompts are plain text: {prompt[:80]!r}")
        self.prompt, self.input_image = prompt, input_image
        self.trunk, self.tokenizer, self.config, self.packing = trunk, tokenizer, config, packing
        self.controller = controller
        # Asked once: a controller without `review` costs the loop no snapshot at all.
        self.reviewer = controller if isinstance(controller, Reviewer) else None
        self.ids = SpecialTokenIds.from_tokenizer(tokenizer)
        self.grid = _check_geometry(trunk, config, packing)
        weight = trunk.language_model.model.embed_tokens.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.seed = seed
        self.costs = Costs()
        self.contexts = Contexts(
            trunk,
            text_guidance=config.cfg_text_scale > 1.0,
            image_guidance=config.cfg_img_scale > 1.0,
            kv_cache=config.kv_cache,
            costs=self.costs,
            text_uncond_drops=config.cfg_text_drops,
        )
        # Built once per generation, not per token or per Euler step: the loop's own work between forward
        # passes is part of what the process costs over single-pass generation (tools/bench_generate.py).
        self.text_forbidden = ~self._text_token_mask(weight.shape[0])  # (V,)
        self.draft_stops = frozenset(  # a draft stops before any control token but the closing one
            self.tokenizer.convert_tokens_to_ids([t for t in CONTROL_TOKENS if t != IM_END])
        )
        self.markers = trunk.embed_text(
            torch.tensor([self.ids.vision_start, self.ids.vision_end], device=self.device)
        )  # (2, C): <|vision_start|>, <|vision_end|>
        self.body: list[str] = []  # the emitted steps as tagged text, piece by piece
        self.images: list[Image.Image] = []
        self.token_ids: list[int] = []

    # ---- the loop --------------------------------------------------------------------------------------

    def run(self) -> Generation:
        if self.input_image is not None:
            p = self.packing
            grid = image_grid(self.input_image.size, p.vae_min_size, p.vae_max_size, p.latent_downsample)
            self._write_vae(self.input_image, grid)
            self._write_vit(self.input_image)
            self.token_ids += [self.ids.vision_start, self.ids.vision_end]
        prompt_ids = [self.ids.im_start, *encode_text(self.tokenizer, self.prompt, "prompt"), self.ids.im_end]
        self.contexts.write(self._text_block(prompt_ids), "prompt")
        self.token_ids += prompt_ids
        if self.config.mode == "single_pass":
            self._draw()
            return self._finish("single_pass")
        return self._finish(self._process())

    def _process(self) -> StopReason:
        """Text segments and images until the model stops or a cap is reached."""
        after: Literal["prompt", "text", "image"] = "prompt"
        while True:
            last = self._text_segment(after)
            if last is None:
                return "max_text_tokens"
            if self._decide(last, (VISION_START, IM_START), "text") == IM_START:
                after = "text"
                continue
            image = self._draw()
            if len(self.images) == self.config.max_images:
                return "max_images"
            last = self._write_vae(image, self.grid)
            if self.packing.vit_images == "all":
                last = self._write_vit(image)
            if self._decide(last, (IM_START, IM_END), "image") == IM_END:
                self.token_ids.append(self.ids.im_end)
                return "stop_token"
            if self.packing.vit_images == "inspected" and self.config.inspect:
                self._write_vit(image)
            after = "image"

    def _finish(self, reason: StopReason) -> Generation:
        closed = reason in ("stop_token", "max_images", "single_pass")
        user = USER_TURN + (VISION_BLOCK if self.input_image is not None else "") + self.prompt
        text = user + ASSISTANT_TURN + "".join(self.body) + (IM_END if closed else "")
        trajectory, error = None, None
        if self.config.mode == "process":
            inputs = [] if self.input_image is None else [self.input_image]
            try:
                trajectory = Trajectory.from_text(text, inputs + self.images)
            except TrajectoryError as problem:
                error = _describe(problem, text)
        return Generation(
            self.prompt, text, self.images, self.token_ids, trajectory, error, reason, self.costs, self.seed
        )

    # ---- decisions and text --------------------------------------------------------------------------

    def _state(self, after: Literal["prompt", "text", "image"]) -> LoopState:
        return LoopState(self.prompt, "".join(self.body), tuple(self.images), after)

    def _decide(self, hidden: torch.Tensor, options: tuple[str, ...], after: Literal["text", "image"]) -> str:
        """The control token after a segment: the model's pick among `options`, then the controller's say."""
        option_ids = self.tokenizer.convert_tokens_to_ids(list(options))
        logits = self.trunk.language_model.lm_head(hidden)[option_ids].float()  # (len(options),)
        proposed = options[pick(logits, self.config.do_sample, self.config.temperature, self.generator)]
        choice = self.controller.decide(self._state(after), options, proposed)
        if choice not in options:
            raise ValueError(
                f"controller {type(self.controller).__name__} chose {choice!r} after {after}; "
                f"the options were {', '.join(options)}"
            )
        return choice

    def _text_segment(self, after: Literal["prompt", "text", "image"]) -> torch.Tensor | None:
        """One ``<|im_start|> … <|im_end|>`` segment: forced, or written by the model and then reviewed.

        A reviewer's replacement takes the model's segment back (the conditional context and the random
        generator return to where they were before it) and is written as forced text, so that what
        follows is exactly what follows a dictated text. Only then is the segment shared with the
        unconditional contexts: guidance never sees a text that was taken back.

        Returns the hidden state (C,) of its ``<|im_end|>``, where the next decision is read, or None when
        the text budget ran out first.
        """
        state = self._state(after)
        forced = self.controller.write(state)
        if forced is None:
            before = None if self.reviewer is None else (self.contexts.snapshot(), self.generator.get_state())
            written = self._model_text()
            if written is None:
                return None
            ids, last = written
            text = self._decode(ids[1:-1])
            forced = None if self.reviewer is None else self.reviewer.review(state, text)
            if forced is None:
                self.contexts.share(self._text_block(ids), "text")
                self.body.append(text)
                self.token_ids += ids
                return last
            assert before is not None  # only a reviewer replaces
            snapshot, random_state = before
            self.contexts.rewind(snapshot)
            self.generator.set_state(random_state)
        body = encode_text(self.tokenizer, forced, "the controller's text")
        ids = [self.ids.im_start, *body, self.ids.im_end]
        last = self.contexts.write(self._text_block(ids), "text")[-1]
        self.body.append(forced)
        self.token_ids += ids
        return last

    def _model_text(self) -> tuple[list[int], torch.Tensor] | None:
        """The model writes a segment into the conditional context only (not shared yet).

        Each pass feeds the last picked token, followed by up to ``config.draft_tokens`` tokens drafted
        from the sequence itself (`pdgen.inference.drafting`); the drafted tokens the model does not keep
        are taken back out of the context. With no draft this is decoding one token a pass.

        Returns its ids, ``<|im_start|>`` to ``<|im_end|>``, and the hidden state (C,) of the last; or
        None when the text budget ran out first (what was written is then kept as the run's end).
        """
        c, im_end = self.config, self.ids.im_end
        ids = [self.ids.im_start]
        while True:
            draft = self._draft(ids) if ids[-1] != im_end else []
            hidden = self.contexts.write_cond(self._text_block([ids[-1], *draft]))  # (1+K, C)
            if ids[-1] == im_end:
                return ids, hidden[-1]
            logits = self.trunk.language_model.lm_head(hidden).float()  # (1+K, V)
            logits = logits.masked_fill(self.text_forbidden, -torch.inf)
            emitted = accept_draft(logits, draft, c.do_sample, c.temperature, self.generator)
            kept = len(emitted) - 1  # drafted tokens the model kept: the last one is its own pick
            if im_end in emitted[:kept]:  # a kept draft closed the text: nothing follows it
                kept = emitted.index(im_end) + 1
                emitted = emitted[:kept]
            self.contexts.take_back(len(draft) - kept)
            room = c.max_text_tokens - self.costs.text_tokens
            self.costs.drafted_tokens += len(draft)
            self.costs.drafted_tokens_kept += min(kept, room)
            ids += emitted[:room]
            self.costs.text_tokens += min(len(emitted), room)
            if ids[-1] == im_end and kept == len(emitted):  # already in the context
                return ids, hidden[kept]
            if ids[-1] != im_end and self.costs.text_tokens == c.max_text_tokens:
                self.body.append(self._decode(ids[1:]))
                self.token_ids += ids
                return None

    def _draft(self, ids: list[int]) -> list[int]:
        """Tokens drafted after the segment `ids` so far by looking the sequence up (none when off)."""
        if not self.config.draft_tokens:
            return []
        history = self.token_ids + ids
        stops, end = self.draft_stops, self.ids.im_end
        return lookup_draft(history, self.config.draft_tokens, LOOKUP_NGRAM, stops, end)

    def _text_token_mask(self, vocab_rows: int) -> torch.Tensor:
        """(V,) bool: ids a text may hold: the tokenizer's, minus every control token but ``<|im_end|>``."""
        allowed = torch.zeros(vocab_rows, dtype=torch.bool, device=self.device)
        allowed[: len(self.tokenizer)] = True
        controls = self.tokenizer.convert_tokens_to_ids([t for t in CONTROL_TOKENS if t != IM_END])
        allowed[controls] = False
        return allowed

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # ---- images ------------------------------------------------------------------------------------------

    def _draw(self) -> Image.Image:
        """Samples one image with the flow sampler and guidance; nothing is written to any context."""
        c, grid = self.config, self.grid
        n = grid[0] * grid[1]
        positions = grid_position_ids(grid, self.packing.max_latent_size).to(self.device)  # (N,)
        noise = torch.randn(
            n, self.trunk.config.patch_latent_dim, generator=self.generator, device=self.device
        )
        rows = torch.arange(1, n + 1, device=self.device)  # the latent tokens between the two markers

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            times = torch.full((n,), t, device=self.device)
            block = self._image_block(self.trunk.embed_latents(x, times, positions), gen=True)
            v_cond = self._velocity(self.contexts.query_cond(block), rows)
            v_text = v_image = None
            if guidance_on(t, c.cfg_text_scale, c.cfg_interval):
                v_text = self._velocity(self.contexts.query_uncond(block, "text"), rows, v_cond)
            if guidance_on(t, c.cfg_img_scale, c.cfg_interval):
                v_image = self._velocity(self.contexts.query_uncond(block, "image"), rows, v_cond)
            return guide(
                v_cond,
                v_text,
                v_image,
                c.cfg_text_scale,
                c.cfg_img_scale,
                c.cfg_renorm_type,
                c.cfg_renorm_min,
            )

        x0 = euler_sample(velocity, noise, c.num_timesteps, c.timestep_shift)  # (N, P)
        self.costs.images += 1
        self.costs.sampling_steps += c.num_timesteps
        latent = unpatchify_latent(x0.to(self.dtype), grid, self.trunk.config.latent_patch_size)
        decoded = self.trunk.vae.decode(latent[None].to(next(self.trunk.vae.parameters()).dtype))[0]
        image = _to_image(decoded)
        self.images.append(image)
        self.body.append(VISION_BLOCK)
        self.token_ids += [self.ids.vision_start, self.ids.vision_end]
        return image

    def _velocity(
        self, hidden: torch.Tensor | None, rows: torch.Tensor, same_as: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, P) float32 velocity at the latent rows; `same_as` if the context equals the conditional one."""
        if hidden is None:
            assert same_as is not None
            return same_as
        return self.trunk.velocity(hidden, rows).float()

    def _write_vae(self, image: Image.Image, grid: tuple[int, int]) -> torch.Tensor:
        """Writes `image` as clean VAE tokens (t = 0) on a `grid` of latent tokens, encoded from its pixels
        as training reads them; returns the hidden state (C,) of its ``<|vision_end|>``."""
        pixels = image_pixels(image, grid, self.packing.latent_downsample).to(self.device)  # (3, H, W)
        latent = self.trunk.encode_images([pixels], self.generator)[0]
        x0 = patchify_latent(latent, grid, self.trunk.config.latent_patch_size)  # (N, P)
        positions = grid_position_ids(grid, self.packing.max_latent_size).to(self.device)
        zeros = torch.zeros(x0.shape[0], device=self.device)
        block = self._image_block(self.trunk.embed_latents(x0, zeros, positions), gen=True)
        return self.contexts.write(block, "image")[-1]

    def _write_vit(self, image: Image.Image) -> torch.Tensor:
        """Writes `image`'s ViT copy (what the model *reads*); returns its last token's hidden state (C,)."""
        p = self.packing
        grid = image_grid(image.size, p.vit_min_size, p.vit_max_size, p.vit_patch_size)
        patches = patchify(image_pixels(image, grid, p.vit_patch_size), p.vit_patch_size).to(
            self.device, self.dtype
        )
        positions = grid_position_ids(grid, p.vit_max_patches_per_side).to(self.device)
        seqlens = torch.tensor([patches.shape[0]], dtype=torch.int32, device=self.device)
        block = self._image_block(self.trunk.embed_vit(patches, positions, seqlens), gen=False)
        return self.contexts.write(block, "image")[-1]

    # ---- blocks ------------------------------------------------------------------------------------------

    def _text_block(self, ids: list[int]) -> Block:
        tokens = torch.tensor(ids, device=self.device)
        embeds = self.trunk.embed_text(tokens)  # (Q, C)
        return Block(embeds, torch.zeros(len(ids), dtype=torch.bool, device=self.device), "text")

    def _image_block(self, inner: torch.Tensor, gen: bool) -> Block:
        """``<|vision_start|> inner <|vision_end|>``; `gen`: the inner tokens take the generation expert."""
        markers = self.markers
        embeds = torch.cat([markers[:1], inner.to(markers.dtype), markers[1:]])  # (N+2, C)
        gen_mask = torch.zeros(embeds.shape[0], dtype=torch.bool, device=self.device)
        gen_mask[1:-1] = gen
        return Block(embeds, gen_mask, "image")


def _check_geometry(trunk: BagelTrunk, config: GenerationConfig, packing: PackingConfig) -> tuple[int, int]:
    """The latent grid (h, w) of `config.image_size`, after checking that trunk, packing and size agree."""
    mismatched = packing.geometry.mismatches(PackingGeometry.of_trunk(trunk.config))
    if mismatched:
        raise ValueError(
            f"the packing config does not match the trunk {trunk.config.name!r}: {', '.join(mismatched)}; "
            "give it the trunk's geometry: packing.for_trunk(trunk.config)"
        )
    height, width = config.image_size
    stride = packing.latent_downsample
    grid = (height // stride, width // stride)
    if (
        height % stride
        or width % stride
        or image_grid((width, height), packing.vae_min_size, packing.vae_max_size, stride) != grid
    ):
        raise ValueError(
            f"GenerationConfig.image_size={config.image_size}: need multiples of {stride} px between the "
            f"packing config's vae_min_size={packing.vae_min_size} and vae_max_size={packing.vae_max_size}"
        )
    return grid


def _to_image(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) decoder output in about [-1, 1] -> an RGB image."""
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (3, H, W)
    return Image.fromarray(np.ascontiguousarray(array.permute(1, 2, 0).cpu().numpy()), "RGB")


def _describe(problem: TrajectoryError, text: str) -> str:
    """A `TrajectoryError` on generated text, with the text around the place it names."""
    if problem.offset is None:
        return f"the model's output is not a valid trajectory: {problem}"
    start = max(0, problem.offset - 40)
    return (
        f"the model's output is not a valid trajectory: {problem}; "
        f"it emitted …{text[start : problem.offset + 40]!r}…"
    )
