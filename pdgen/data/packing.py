"""Packing: trajectories become BAGEL's packed sequences, and a packer fills a token budget with them.

A training step sees one *pack*: many trajectories (samples) concatenated into a single sequence of T tokens,
with no batch dimension. Each sample is a run of *splits*, and every split has a mode that the attention rule
(``pdgen.models.attention``) reads: ``causal`` text, ``full`` clean image, ``noise`` image being denoised.

Layout of one sample (BAGEL's ``pack_sequence`` applied to pdgen's steps; RoPE ids restart at 0 per sample)::

    [input image: clean VAE | ViT]     editing only; context, no loss
    <|im_start|> prompt <|im_end|>     causal, no loss
    per Plan / Refine.plan:  <|im_start|> <ins>…</ins><des>…</des> <|im_end|>      causal, CE role plan
    per Sketch / Refine.image (a generated image, 2 or 3 copies):
        <|vision_start|> noised latents <|vision_end|>    noise, MSE target, RoPE id r, NOT incremented
        <|vision_start|> clean latents  <|vision_end|>    full, t = 0, same id r, then r += 1
        <|vision_start|> ViT patches    <|vision_end|>    full, id r, then r += 1   (if understood, below)
    per Inspect:  <|im_start|> critique [<refine>…</refine>] <|im_end|>             causal, CE role inspect

The packed tokens follow BAGEL's training framing, not the chat frame of ``Trajectory.to_text``: no
``user``/``assistant`` headers, and each text segment wrapped in its own ``<|im_start|>``/``<|im_end|>``,
as the released checkpoint was trained and as its inference feeds text. The stop rule of
``pdgen.trajectory`` (``<|im_end|>`` right after ``<|vision_end|>``) reads the same in both.

Why each piece:
- Text tokens take consecutive RoPE ids; every token of an image split (markers included) shares one id, the
  layout inside an image comes from the latent / ViT 2-D position tables.
- A generated image is a *target* once (noised; the mask makes a noise split invisible to everything after
  it) and *context* once (clean VAE, t = 0): later steps read the clean copy. That is also what inference
  does: the denoised image is re-encoded into the KV cache at the same RoPE id.
- A ViT copy is added where the model must *understand* the image: an image an Inspect step judges
  (``vit_images="inspected"``), every generated image (``"all"``), and always the input image.
- CE labels are next-token targets (the token at position i predicts token i+1). Roles: ``PLAN`` for the
  plan text, ``INSPECT`` for the critique, ``SPECIAL`` for the control decisions made at a segment's last
  token: after a plan, ``<|vision_start|>`` (when to draw); after an inspection, ``<|im_start|>``; after a
  generated image, ``<|im_start|>`` (continue) or ``<|im_end|>`` (stop; the last image is the answer). This is
  the paper's loss on the vision tokens and BAGEL's ``special_token_loss``; its own role lets a recipe weight
  it (BAGEL's released plans had it off). The prompt and the input image get no loss.
- A step that the next Inspect refines (its ``refine`` is set) is a flawed draft: unless
  ``train_criticised`` is set, its plan text gets no CE and its image no noised copy (no MSE), so the model
  learns to *recognise* the mistake, never to make it. The critique and the correction are trained.

For classifier-free guidance the caller may drop the prompt, every text, or the input image of a sample
(``sample``'s ``drop_*`` flags; BAGEL's condition dropout), so the model learns the unconditional contexts.

Two more layouts are BAGEL's pre-training samples, for the base stage and the single-pass baseline:
``text_to_image`` (a caption, then one noised image and nothing else) and ``image_to_text`` (a ViT copy, then
its caption with CE).

Token counts are known from text lengths and image sizes alone, so ``TrajectoryPacker.sample`` is cheap (no
pixels are touched); ``TrajectoryPacker.collate`` resizes images and builds the tensors for one pack only,
the attention masks included (``PackedBatch.attention``): in a DataLoader worker, not in the training step.
``pdgen.data.token_budget.TokenBudgetPacker`` fills packs from a stream of samples (BAGEL's loop, with a
best-fit overflow buffer and a knapsack when the buffer overflows). ``PackingConfig`` (image geometry and
packing policy) is in ``pdgen.data.packing_config``.

Shape legend: T packed tokens (all samples, padding included); N_txt text and control tokens; N_vae latent
tokens of VAE splits; N_vit ViT patch tokens; N_img ViT images; N_ce CE labels; N_mse noised latent tokens;
p ViT patch side in pixels; H, W image height and width in pixels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from PIL import Image

from pdgen.data.packing_config import PackingConfig
from pdgen.data.tokenizer import SpecialTokenIds, encode_text
from pdgen.models.attention import prepared_meta
from pdgen.models.mask import PackedAttentionMeta
from pdgen.trajectory import Inspect, Plan, Refine, Sketch, Trajectory


class CeRole(IntEnum):
    """Which kind of text a CE label belongs to (``PackedBatch.ce_roles``)."""

    PLAN = 0
    INSPECT = 1
    SPECIAL = 2


class CeTarget(NamedTuple):
    """One CE target: the token at ``offset`` inside its split predicts ``target``."""

    offset: int
    target: int
    role: CeRole


@dataclass(frozen=True)
class TextSplit:
    """``<|im_start|> text <|im_end|>``: a causal split with consecutive RoPE ids from ``position``."""

    ids: tuple[int, ...]
    position: int
    labels: tuple[CeTarget, ...] = ()
    mode = "causal"

    @property
    def num_tokens(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ImageSplit:
    """``<|vision_start|> tokens <|vision_end|>`` of one image copy; all tokens at RoPE id ``position``.

    ``kind`` is ``"vae"`` (latent tokens; ``noised`` says whether it is the MSE target) or ``"vit"``
    (patch tokens). ``grid`` is (rows, cols) of tokens; pixels are read only when a pack is collated.
    """

    image: Image.Image
    kind: Literal["vae", "vit"]
    grid: tuple[int, int]
    position: int
    noised: bool = False
    labels: tuple[CeTarget, ...] = ()

    @property
    def mode(self) -> str:
        return "noise" if self.noised else "full"

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] + 2


Split = TextSplit | ImageSplit

ImageCopy = Literal["noised", "clean", "vit"]
IMAGE_COPIES: tuple[ImageCopy, ...] = ("noised", "clean", "vit")
"""The copies an image can have in a pack, in the order they are laid out."""


@dataclass(frozen=True)
class PackedSample:
    """One trajectory laid out as splits; ``num_tokens`` is what it costs in a pack."""

    splits: tuple[Split, ...]

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.splits)


@dataclass
class PackedBatch:
    """One pack, in BAGEL's packed-field layout with pdgen's names (contract 3, consumed by ``BagelTrunk``).

    Every ``*_indexes`` tensor holds positions in the packed sequence of T tokens. Text, VAE and ViT tokens
    partition those positions. ``packed_timesteps`` is 0.0 for clean VAE tokens and NaN for noised ones: t is
    drawn per noised image by ``pdgen.models.bagel.flow.sample_timesteps`` (one place for the sampler), and a
    NaN that reaches the model means that step was skipped. The VAE tokens of image i are the next
    ``h_i * w_i`` entries of ``packed_vae_token_indexes``, in ``vae_images`` order, row-major.
    """

    sequence_length: int
    sample_lens: list[int]
    split_lens: list[int]
    split_modes: list[str]
    packed_text_ids: torch.Tensor  # (N_txt,) long
    packed_text_indexes: torch.Tensor  # (N_txt,) long
    packed_position_ids: torch.Tensor  # (T,) long, RoPE ids
    packed_label_ids: torch.Tensor  # (N_ce,) long
    ce_loss_indexes: torch.Tensor  # (N_ce,) long
    ce_roles: torch.Tensor  # (N_ce,) long, CeRole values
    vae_images: list[torch.Tensor]  # each (3, H, W) in [-1, 1]
    vae_latent_shapes: list[tuple[int, int]]  # (h, w) in latent tokens
    packed_vae_token_indexes: torch.Tensor  # (N_vae,) long
    packed_latent_position_ids: torch.Tensor  # (N_vae,) long, row * max_latent_size + col
    packed_timesteps: torch.Tensor  # (N_vae,) float, 0.0 clean, NaN noised (to be sampled)
    mse_loss_indexes: torch.Tensor  # (N_mse,) long
    packed_vit_tokens: torch.Tensor  # (N_vit, 3 * p * p) float in [-1, 1], each patch flattened (p, p, 3)
    packed_vit_position_ids: torch.Tensor  # (N_vit,) long, row * vit_max_patches_per_side + col
    packed_vit_token_indexes: torch.Tensor  # (N_vit,) long
    vit_token_seqlens: torch.Tensor  # (N_img,) int
    # The split layout as attention reads it, with what ``sdpa`` derives from it (its masks) when the pack is
    # CPU-sized: built by ``collate``, i.e. in the DataLoader worker, not in the training step.
    attention: PackedAttentionMeta | None = field(default=None, repr=False, compare=False)

    def attention_meta(self) -> PackedAttentionMeta:
        """Per-token sample / split / mode metadata for ``packed_attention``, on this batch's device: the
        one ``collate`` built, or (for a batch made another way) built now."""
        device = self.packed_position_ids.device
        if self.attention is not None:
            return self.attention.to(device)  # itself, with its cached masks, when already there
        return PackedAttentionMeta.from_splits(self.sample_lens, self.split_lens, self.split_modes, device)

    def to(self, device: torch.device | str) -> PackedBatch:
        """A copy with every tensor on ``device`` (lists of lengths stay Python lists)."""
        moved = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor | PackedAttentionMeta):
                moved[f.name] = value.to(device)
            elif f.name == "vae_images":
                moved[f.name] = [image.to(device) for image in value]
        return dataclasses.replace(self, **moved)


@dataclass
class _Turn:
    """The splits of one segment of the conversation, and whether its last token decides what comes next."""

    splits: list[Split]
    decides_next: bool
    first_token: int  # what the previous turn's last token predicts
    skipped_positions: int = 0  # RoPE ids a dropped turn keeps reserved


class TrajectoryPacker:
    """Lays trajectories out as ``PackedSample``s and collates samples into a ``PackedBatch``.

    Args:
        tokenizer: a Hugging Face tokenizer with BAGEL's control tokens (``pdgen.data.tokenizer``).
        config: image geometry and policy; use the preset named like the trunk (``PackingConfig.from_name``).
    """

    def __init__(self, tokenizer: Any, config: PackingConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.ids = SpecialTokenIds.from_tokenizer(tokenizer)

    # ---- one trajectory -> splits --------------------------------------------------------------------

    def sample(
        self,
        trajectory: Trajectory,
        where: str = "trajectory",
        drop_prompt: bool = False,
        drop_input_image: bool = False,
        drop_text: bool = False,
        drop_images: bool = False,
    ) -> PackedSample:
        """Lay out one trajectory (no pixels are read).

        Args:
            trajectory: what to lay out.
            where: names the trajectory in error messages (a shard key, a file).
            drop_prompt: leave the prompt out, for classifier-free guidance: the model learns to draw without
                it, which is the unconditional context of text CFG (BAGEL's ``text_cond_dropout_prob``; the
                caller draws the coin).
            drop_input_image: leave the input image out (image CFG; BAGEL's ``vae/vit_cond_dropout_prob``).
                Its RoPE ids stay reserved, as in BAGEL.
            drop_text: leave out every text, the prompt and the model's own plans and inspections, and keep
                only the images and their MSE targets: the unconditional context of text CFG when the loop
                guides with the images alone (BAGEL's think mode keeps generated text out of its
                ``cfg_text_context``). No CE label is kept: every decision would now read a wrong next token.
            drop_images: leave out every image the trajectory draws and keep its text: the plans' lesson
                (prompt -> plans) at a fraction of the tokens. Each image's RoPE ids stay reserved and the
                plan before it still predicts ``<|vision_start|>``, so the text sits where the loop writes
                it; inspections, which judge an image that is not there, are kept as context without CE.
        """
        steps = trajectory.steps
        # Plan and inspect texts exactly as the tagged text writes them: one per Plan, Refine and Inspect.
        texts = iter(seg.text for seg in trajectory.segments() if seg.role in ("plan", "inspect"))
        turns: list[_Turn] = []
        if trajectory.input_image is not None and drop_input_image:
            # Nothing precedes the input image, so no label ever reads this turn's first_token.
            turns.append(_Turn([], decides_next=False, first_token=-1, skipped_positions=2))  # VAE + ViT
        elif trajectory.input_image is not None:
            turns.append(self._image_turn(trajectory.input_image, ("clean", "vit"), decides_next=False))
        if not (drop_prompt or drop_text):
            turns.append(self._text_turn(trajectory.prompt, None, f"{where}.prompt"))
        for i, step in enumerate(steps):
            trained = self.config.train_criticised or not self._is_criticised(steps, i)
            if isinstance(step, Plan | Refine):
                turns.append(
                    self._text_turn(next(texts), CeRole.PLAN if trained else None, f"{where}.steps[{i}]")
                )
            if isinstance(step, Inspect):
                role = None if drop_images else CeRole.INSPECT
                turns.append(self._text_turn(next(texts), role, f"{where}.steps[{i}]"))
            if isinstance(step, Sketch | Refine):
                inspected = i + 1 < len(steps) and isinstance(steps[i + 1], Inspect)
                understood = inspected or self.config.vit_images == "all"
                if drop_images:  # the clean copy's RoPE id, and the ViT copy's
                    skipped = 1 + understood
                    turns.append(_Turn([], False, self.ids.vision_start, skipped_positions=skipped))
                    continue
                copies = ("noised",) * trained + ("clean",) + ("vit",) * understood
                turns.append(self._image_turn(step.image, copies, decides_next=not drop_text))
        if drop_text:
            turns = [turn for turn in turns if not isinstance(turn.splits[0], TextSplit)]
        return PackedSample(tuple(self._with_positions_and_decisions(turns)))

    def text_to_image(
        self, caption: str, image: Image.Image, where: str = "sample", drop_caption: bool = False
    ) -> PackedSample:
        """A caption, then the image it describes as a generation target: one noised copy and nothing else.

        BAGEL's text-to-image pre-training sample, and the layout of single-pass generation (the loop's
        ``single_pass`` mode writes the prompt and samples one image at the next RoPE id). Nothing follows the
        image, so it needs no clean copy and decides nothing: nearly every token carries the MSE loss.
        ``drop_caption`` leaves the caption out (the unconditional context of text CFG).
        """
        turns = [] if drop_caption else [self._text_turn(caption, None, f"{where}.caption")]
        turns.append(self._image_turn(image, ("noised",), decides_next=False))
        return PackedSample(tuple(self._with_positions_and_decisions(turns)))

    def image_to_text(self, image: Image.Image, caption: str, where: str = "sample") -> PackedSample:
        """An image seen through the ViT, then its caption with CE (role ``INSPECT``).

        BAGEL's image-to-text pre-training sample: it teaches the understanding path to read an image, which
        is what the inspector does with every image it judges.
        """
        caption_turn = self._text_turn(caption, CeRole.INSPECT, f"{where}.caption")
        # The sample ends with the caption's <|im_end|>: nothing is decided after it.
        turns = [
            self._image_turn(image, ("vit",), decides_next=False),
            dataclasses.replace(caption_turn, decides_next=False),
        ]
        return PackedSample(tuple(self._with_positions_and_decisions(turns)))

    @staticmethod
    def _is_criticised(steps: Sequence[Any], i: int) -> bool:
        """Whether step ``i`` (a Plan, Sketch or Refine) is judged wrong by an Inspect that sets ``refine``.

        A plan's own sketch sits between it and the inspection, so sketches are skipped over.
        """
        j = i + 1
        while j < len(steps) and isinstance(steps[j], Sketch):
            j += 1
        judged = j < len(steps) and isinstance(steps[j], Inspect) and steps[j].refine is not None
        return judged and not isinstance(steps[i], Inspect)

    def _text_turn(self, text: str, role: CeRole | None, where: str) -> _Turn:
        body = encode_text(self.tokenizer, text, where)
        ids = (self.ids.im_start, *body, self.ids.im_end)
        # The token at offset k predicts ids[k + 1]: the body and the closing <|im_end|>.
        labels = () if role is None else tuple(CeTarget(k, ids[k + 1], role) for k in range(len(ids) - 1))
        split = TextSplit(ids=ids, position=-1, labels=labels)
        return _Turn([split], decides_next=role is not None, first_token=self.ids.im_start)

    def _image_turn(self, image: Image.Image, copies: Sequence[ImageCopy], decides_next: bool) -> _Turn:
        """The ``copies`` of an image, in this order: ``noised`` (generation target), ``clean`` VAE, ``vit``.

        A generated image's last copy decides continue or stop (``decides_next``); an input image is given and
        decides nothing.
        """
        c = self.config
        vae_grid = image_grid(image.size, c.vae_min_size, c.vae_max_size, c.latent_downsample)
        vit_grid = image_grid(image.size, c.vit_min_size, c.vit_max_size, c.vit_patch_size)
        made = {
            "noised": lambda: ImageSplit(image, "vae", vae_grid, position=-1, noised=True),
            "clean": lambda: ImageSplit(image, "vae", vae_grid, position=-1),
            "vit": lambda: ImageSplit(image, "vit", vit_grid, position=-1),
        }
        splits: list[Split] = [made[copy]() for copy in IMAGE_COPIES if copy in copies]
        return _Turn(splits, decides_next=decides_next, first_token=self.ids.vision_start)

    def _with_positions_and_decisions(self, turns: list[_Turn]) -> list[Split]:
        """Assign RoPE ids in order and put the SPECIAL label on each deciding turn's last token."""
        out: list[Split] = []
        rope = 0
        for t, turn in enumerate(turns):
            rope += turn.skipped_positions
            nxt = turns[t + 1].first_token if t + 1 < len(turns) else self.ids.im_end
            for s, split in enumerate(turn.splits):
                labels = split.labels
                if turn.decides_next and s == len(turn.splits) - 1:
                    labels = (*labels, CeTarget(split.num_tokens - 1, nxt, CeRole.SPECIAL))
                out.append(dataclasses.replace(split, position=rope, labels=labels))
                if isinstance(split, TextSplit):
                    rope += split.num_tokens
                elif not split.noised:  # the noised copy shares the clean copy's id
                    rope += 1
        return out

    # ---- samples -> one pack -----------------------------------------------------------------------

    def collate(self, samples: Sequence[PackedSample], pad_to: int | None = None) -> PackedBatch:
        """Concatenate samples into one pack; ``pad_to`` appends a padding pseudo-sample up to that length.

        The padding sample (pad tokens, causal, no loss) gives packs a fixed length, which FlexAttention's
        block mask and compiled kernels want; BAGEL pads its flex packs the same way.
        """
        used = sum(sample.num_tokens for sample in samples)
        if pad_to is not None and used > pad_to:
            raise ValueError(f"the samples hold {used} tokens, more than pad_to={pad_to}")
        builder = _PackBuilder(self.config, self.ids)
        for sample in samples:
            builder.add_sample(sample)
        if pad_to is not None and pad_to > used:
            builder.add_padding_sample(pad_to - used)
        return builder.build()

    def collate_padded(self, samples: Sequence[PackedSample]) -> PackedBatch:
        """The padded-batch baseline: every sample right-padded to the longest one, all in one sequence.

        This is what a ``(B, L)`` batch costs: B x L tokens, the padding computed and thrown away.
        """
        longest = max(s.num_tokens for s in samples)
        builder = _PackBuilder(self.config, self.ids)
        for sample in samples:
            builder.add_sample(sample, pad_to=longest)
        return builder.build()


def image_grid(size: tuple[int, int], min_side: int, max_side: int, stride: int) -> tuple[int, int]:
    """(rows, cols) of ``stride``-pixel tokens for an image of ``size`` = (width, height).

    Shrink so the long side is at most ``max_side``, grow so the short side is at least ``min_side`` (the long
    side wins a conflict), then round each side to a whole number of tokens (BAGEL's resize to a stride).
    """
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    if min(width, height) * scale < min_side:
        scale = min(min_side / min(width, height), max_side / max(width, height))
    cap = max_side // stride
    rows = min(cap, max(1, round(height * scale / stride)))
    cols = min(cap, max(1, round(width * scale / stride)))
    return rows, cols


def image_pixels(image: Image.Image, grid: tuple[int, int], stride: int) -> torch.Tensor:
    """The image resized to the grid, as a (3, H, W) float tensor in [-1, 1]."""
    rows, cols = grid
    resized = image.convert("RGB").resize((cols * stride, rows * stride), Image.Resampling.BICUBIC)
    array = np.asarray(resized, dtype=np.float32)  # (H, W, 3) in [0, 255]
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0  # (3, H, W)


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """(3, H, W) -> (rows * cols, patch * patch * 3): row-major patches, each flattened as (p, p, channel).

    That order matches SigLIP's patch embedding once its conv weight is stored as a linear layer (BAGEL's
    ``convert_conv2d_to_linear``).
    """
    c, h, w = pixels.shape
    x = pixels.reshape(c, h // patch, patch, w // patch, patch)  # (3, rows, p, cols, p)
    return x.permute(1, 3, 2, 4, 0).reshape(-1, patch * patch * c)  # (rows * cols, p * p * 3)


def grid_position_ids(grid: tuple[int, int], table_side: int) -> torch.Tensor:
    """Flattened 2-D ids ``row * table_side + col`` of a grid, row-major: (rows * cols,) long."""
    rows, cols = grid
    return (torch.arange(rows)[:, None] * table_side + torch.arange(cols)[None, :]).reshape(-1)


@dataclass
class _PackBuilder:
    """Accumulates samples into the flat lists of a ``PackedBatch``; ``length`` is the tokens so far."""

    config: PackingConfig
    ids: SpecialTokenIds
    length: int = 0
    sample_lens: list[int] = field(default_factory=list)
    split_lens: list[int] = field(default_factory=list)
    split_modes: list[str] = field(default_factory=list)
    text_ids: list[int] = field(default_factory=list)
    text_indexes: list[int] = field(default_factory=list)
    position_ids: list[torch.Tensor] = field(default_factory=list)
    label_ids: list[int] = field(default_factory=list)
    ce_indexes: list[int] = field(default_factory=list)
    ce_roles: list[int] = field(default_factory=list)
    vae_images: list[torch.Tensor] = field(default_factory=list)
    vae_shapes: list[tuple[int, int]] = field(default_factory=list)
    vae_indexes: list[torch.Tensor] = field(default_factory=list)
    latent_position_ids: list[torch.Tensor] = field(default_factory=list)
    timesteps: list[torch.Tensor] = field(default_factory=list)
    mse_indexes: list[torch.Tensor] = field(default_factory=list)
    vit_tokens: list[torch.Tensor] = field(default_factory=list)
    vit_position_ids: list[torch.Tensor] = field(default_factory=list)
    vit_indexes: list[torch.Tensor] = field(default_factory=list)
    vit_seqlens: list[int] = field(default_factory=list)

    def add_sample(self, sample: PackedSample, pad_to: int | None = None) -> None:
        """Append a sample; with ``pad_to``, right-pad it to that many tokens (a row of a padded batch)."""
        start = self.length
        for split in sample.splits:
            if isinstance(split, TextSplit):
                self._add_text(split)
            else:
                self._add_image(split)
        if pad_to is not None and self.length - start < pad_to:
            last = sample.splits[-1]
            next_position = last.position + (last.num_tokens if isinstance(last, TextSplit) else 1)
            self._add_text(
                TextSplit(ids=(self.ids.pad,) * (pad_to - self.length + start), position=next_position)
            )
        self.sample_lens.append(self.length - start)

    def add_padding_sample(self, n: int) -> None:
        """A pseudo-sample of ``n`` pad tokens: one causal split, no loss, seen by nothing else."""
        self._add_text(TextSplit(ids=(self.ids.pad,) * n, position=0))
        self.sample_lens.append(n)

    def _open_split(self, split: Split) -> int:
        start = self.length
        self.split_lens.append(split.num_tokens)
        self.split_modes.append(split.mode)
        self.length += split.num_tokens
        for label in split.labels:
            self.ce_indexes.append(start + label.offset)
            self.label_ids.append(label.target)
            self.ce_roles.append(int(label.role))
        return start

    def _add_text(self, split: TextSplit) -> None:
        start = self._open_split(split)
        self.text_ids.extend(split.ids)
        self.text_indexes.extend(range(start, start + split.num_tokens))
        self.position_ids.append(torch.arange(split.position, split.position + split.num_tokens))

    def _add_image(self, split: ImageSplit) -> None:
        start = self._open_split(split)
        end = start + split.num_tokens - 1  # index of <|vision_end|>
        self.text_ids += [self.ids.vision_start, self.ids.vision_end]
        self.text_indexes += [start, end]
        self.position_ids.append(torch.full((split.num_tokens,), split.position))
        inner = torch.arange(start + 1, end)  # (rows * cols,)
        c = self.config
        if split.kind == "vae":
            self.vae_images.append(image_pixels(split.image, split.grid, c.latent_downsample))
            self.vae_shapes.append(split.grid)
            self.vae_indexes.append(inner)
            self.latent_position_ids.append(grid_position_ids(split.grid, c.max_latent_size))
            self.timesteps.append(torch.full((inner.numel(),), math.nan if split.noised else 0.0))
            if split.noised:
                self.mse_indexes.append(inner)
        else:
            pixels = image_pixels(split.image, split.grid, c.vit_patch_size)
            self.vit_tokens.append(patchify(pixels, c.vit_patch_size))
            self.vit_position_ids.append(grid_position_ids(split.grid, c.vit_max_patches_per_side))
            self.vit_indexes.append(inner)
            self.vit_seqlens.append(inner.numel())

    def build(self) -> PackedBatch:
        if not self.sample_lens:
            raise ValueError("cannot collate an empty pack: no samples were given")
        patch_dim = 3 * self.config.vit_patch_size**2
        return PackedBatch(
            sequence_length=self.length,
            sample_lens=list(self.sample_lens),
            split_lens=list(self.split_lens),
            split_modes=list(self.split_modes),
            packed_text_ids=_long(self.text_ids),
            packed_text_indexes=_long(self.text_indexes),
            packed_position_ids=torch.cat(self.position_ids).long(),
            packed_label_ids=_long(self.label_ids),
            ce_loss_indexes=_long(self.ce_indexes),
            ce_roles=_long(self.ce_roles),
            vae_images=self.vae_images,
            vae_latent_shapes=list(self.vae_shapes),
            packed_vae_token_indexes=_cat(self.vae_indexes, torch.long),
            packed_latent_position_ids=_cat(self.latent_position_ids, torch.long),
            packed_timesteps=_cat(self.timesteps, torch.float32),
            mse_loss_indexes=_cat(self.mse_indexes, torch.long),
            packed_vit_tokens=torch.cat(self.vit_tokens) if self.vit_tokens else torch.zeros(0, patch_dim),
            packed_vit_position_ids=_cat(self.vit_position_ids, torch.long),
            packed_vit_token_indexes=_cat(self.vit_indexes, torch.long),
            vit_token_seqlens=torch.tensor(self.vit_seqlens, dtype=torch.int32),
            attention=prepared_meta(self.sample_lens, self.split_lens, self.split_modes),
        )


def _long(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def _cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat(parts).to(dtype) if parts else torch.zeros(0, dtype=dtype)
