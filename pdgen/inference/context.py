"""The sequences the loop grows, and the three guidance contexts built from them.

A *block* is a run of embedded tokens that enters the sequence at once: a text token (or a whole text
segment), or an image copy (``<|vision_start|>`` tokens ``<|vision_end|>``). RoPE ids come from the
sequence, not the block: text takes consecutive ids, an image block one shared id (training's layout,
``pdgen.data.packing``). Each sequence keeps its own next id, because the guidance contexts leave pieces
out and so count differently.

Two interchangeable sequences (habit 5, fast path + reference):

- `CachedSequence`: a `KVCache`; a written block is computed once, never again (the fast path);
- `RecomputedSequence`: keeps the embedded blocks and runs the packed forward pass over the whole prefix
  at every call, with the training mask (``causal``/``full`` splits, the query as a ``noise`` split).
  The KV-cache acceptance test checks the loop produces the same tokens and images with either.

`Contexts` holds the conditional sequence and the unconditional ones guidance needs:

- text-unconditional: the conditional context *without the prompt* (what training's prompt dropout shows
  the model; in single-pass mode the empty context, BAGEL's text-to-image unconditional), or *without any
  text* (the prompt, the plans and the inspections: what training's text dropout shows; BAGEL's think mode
  keeps its generated text out of the text-unconditional context the same way). Only the second makes
  guidance amplify what the plan asks for: the plan repeats the prompt, so the first differs from the
  conditional context by little more than the prompt;
- image-unconditional: the conditional context *without any image* (BAGEL never adds images to its image
  CFG context); their RoPE ids stay reserved, as when training drops an image.

Unconditional contexts are fed lazily: written blocks wait in a queue and run only before the next
image query, so text after the last image never costs guidance passes.

A text the model writes token by token can be taken back before anyone else sees it (a controller's
`review`, ``pdgen.inference.control``): `Contexts.snapshot` before the segment, `Contexts.rewind` to it.
Only the conditional sequence needs rewinding, because a segment is shared with the unconditional ones
only once it is accepted (`Contexts.share`).

Shapes: Q = tokens of a block, C = LLM hidden size, L = tokens of a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from pdgen.inference.costs import Costs
from pdgen.models.attention import packed_attention
from pdgen.models.bagel import BagelTrunk, KVCache
from pdgen.models.mask import PackedAttentionMeta

Part = Literal["prompt", "text", "image"]
"""What a written block is; an unconditional context leaves out one part or two."""


@dataclass(frozen=True)
class Block:
    """Embedded tokens entering a sequence together.

    Attributes:
        embeds: (Q, C) embeddings (text, ViT or VAE tokens, markers included).
        gen_mask: (Q,) bool, True for VAE tokens (the generation expert).
        kind: ``"text"`` (causal, consecutive RoPE ids) or ``"image"`` (bidirectional, one RoPE id).
    """

    embeds: torch.Tensor
    gen_mask: torch.Tensor
    kind: Literal["text", "image"]

    def positions(self, start: int) -> torch.Tensor:
        """(Q,) RoPE ids when the block starts at id `start`."""
        n = self.embeds.shape[0]
        if self.kind == "text":
            return torch.arange(start, start + n, device=self.embeds.device)
        return torch.full((n,), start, device=self.embeds.device)

    def rope_span(self) -> int:
        """How many RoPE ids the block takes once written."""
        return self.embeds.shape[0] if self.kind == "text" else 1


class CachedSequence:
    """A growing sequence over a `KVCache`: each block runs once, attending to the cache."""

    def __init__(self, trunk: BagelTrunk) -> None:
        self.trunk = trunk
        self.cache = trunk.new_cache()
        self.rope = 0

    def run(self, block: Block, write: bool) -> torch.Tensor:
        """(Q, C) hidden states of `block`; appended to the sequence when `write`, else a query only."""
        hidden = self.trunk.forward_cached(
            block.embeds,
            block.positions(self.rope),
            block.gen_mask,
            self.cache,
            causal=block.kind == "text",
            update_cache=write,
        )
        if write:
            self.rope += block.rope_span()
        return hidden

    def take_back(self, tokens: int) -> None:
        """Takes back the last `tokens` tokens of the last block written, which must be text (one RoPE id a
        token): drafted tokens the model did not keep."""
        self.cache.truncate(len(self.cache) - tokens)
        self.rope -= tokens

    def snapshot(self) -> tuple[KVCache, int]:
        """The sequence as it is now, for `rewind`: a fork of the cache (writes append new tensors and
        share the old ones, so this copies one list per layer, no key or value) and the next RoPE id."""
        return self.cache.copy(), self.rope

    def rewind(self, snapshot: tuple[KVCache, int]) -> None:
        """Back to `snapshot`: every block written since is gone, its RoPE ids free again."""
        cache, self.rope = snapshot
        self.cache = cache.copy()  # the snapshot stays as it was, should it be rewound to again


class RecomputedSequence:
    """The reference: keeps the blocks and recomputes the whole prefix with the packed forward each call."""

    def __init__(self, trunk: BagelTrunk) -> None:
        self.trunk = trunk
        self.blocks: list[tuple[Block, torch.Tensor]] = []  # each with its RoPE ids
        self.rope = 0

    def run(self, block: Block, write: bool) -> torch.Tensor:
        """As `CachedSequence.run`; a query block is the pack's last split, in ``noise`` mode."""
        positions = block.positions(self.rope)
        blocks = [*self.blocks, (block, positions)]
        modes = ["causal" if b.kind == "text" else "full" for b, _ in self.blocks]
        modes.append("causal" if block.kind == "text" else "full" if write else "noise")
        lengths = [b.embeds.shape[0] for b, _ in blocks]
        meta = PackedAttentionMeta.from_splits([sum(lengths)], lengths, modes, device=block.embeds.device)

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return packed_attention(q, k, v, meta, impl=self.trunk.attn_impl)

        hidden = self.trunk.language_model.model(
            torch.cat([b.embeds for b, _ in blocks]),  # (L, C)
            torch.cat([p for _, p in blocks]),
            torch.cat([b.gen_mask for b, _ in blocks]),
            attend,
        )
        if write:
            self.blocks.append((block, positions))
            self.rope += block.rope_span()
        return hidden[-block.embeds.shape[0] :]

    def take_back(self, tokens: int) -> None:
        """As `CachedSequence.take_back`: the last block loses its last `tokens` tokens."""
        block, positions = self.blocks[-1]
        if block.kind != "text" or tokens > block.embeds.shape[0]:
            size = positions.numel()
            raise ValueError(f"cannot take {tokens} tokens back from a {block.kind} block of {size}")
        keep = block.embeds.shape[0] - tokens
        self.blocks[-1] = (Block(block.embeds[:keep], block.gen_mask[:keep], "text"), positions[:keep])
        self.rope -= tokens

    def snapshot(self) -> tuple[int, int]:
        """As `CachedSequence.snapshot`: blocks are only ever appended, so their count marks the place."""
        return len(self.blocks), self.rope

    def rewind(self, snapshot: tuple[int, int]) -> None:
        """As `CachedSequence.rewind`."""
        count, self.rope = snapshot
        del self.blocks[count:]


AnySequence = CachedSequence | RecomputedSequence
Snapshot = tuple[KVCache, int] | tuple[int, int]
"""Where a sequence was (its `snapshot`): a fork of its cache or its block count, and its next RoPE id."""


class _Unconditional:
    """A guidance context: a sequence, the part it leaves out, and the blocks waiting to be written."""

    def __init__(self, sequence: AnySequence, leaves_out: frozenset[Part]) -> None:
        self.sequence = sequence
        self.leaves_out = leaves_out
        self.pending: list[Block] = []
        self.differs = False  # False while it still equals the conditional context (nothing left out yet)


class Contexts:
    """The conditional sequence plus the unconditional ones guidance needs; counts every forward pass.

    Args:
        trunk: the model.
        text_guidance: keep a text-unconditional context (``cfg_text_scale > 1``).
        image_guidance: keep an image-unconditional context (``cfg_img_scale > 1``).
        kv_cache: `CachedSequence` (True) or the `RecomputedSequence` reference (False).
        costs: where forward passes are counted.
        text_uncond_drops: what the text-unconditional context leaves out: ``prompt`` or every ``text``
            (the prompt and the model's own texts).
    """

    def __init__(
        self,
        trunk: BagelTrunk,
        text_guidance: bool,
        image_guidance: bool,
        kv_cache: bool,
        costs: Costs,
        text_uncond_drops: Literal["prompt", "text"] = "prompt",
    ) -> None:
        new = CachedSequence if kv_cache else RecomputedSequence
        self.cond = new(trunk)
        text_parts: frozenset[Part] = frozenset(
            ("prompt",) if text_uncond_drops == "prompt" else ("prompt", "text")
        )
        self.text_uncond = _Unconditional(new(trunk), text_parts) if text_guidance else None
        self.image_uncond = _Unconditional(new(trunk), frozenset(("image",))) if image_guidance else None
        self.costs = costs

    def write(self, block: Block, part: Part) -> torch.Tensor:
        """`write_cond` and `share` in one: a block every context sees at once (prompt, image copies)."""
        hidden = self.write_cond(block)
        self.share(block, part)
        return hidden

    def write_cond(self, block: Block) -> torch.Tensor:
        """Writes `block` into the conditional context now; returns its (Q, C) hidden states."""
        self.costs.forward_passes += 1
        return self.cond.run(block, write=True)

    def snapshot(self) -> Snapshot:
        """The conditional context as it is now, to `rewind` to before the unconditional ones are shared
        anything written after it."""
        return self.cond.snapshot()

    def rewind(self, snapshot: Snapshot) -> None:
        """Takes back what was written into the conditional context since `snapshot`; the passes it cost
        stay counted (they ran)."""
        self.cond.rewind(snapshot)

    def take_back(self, tokens: int) -> None:
        """Takes the last `tokens` text tokens back out of the conditional context (drafted tokens the model
        did not keep; nothing was shared yet)."""
        if tokens:
            self.cond.take_back(tokens)

    def share(self, block: Block, part: Part) -> None:
        """Queues `block` (already in the conditional context) for the unconditional contexts that keep
        `part`. A text segment generated token by token is shared once, whole: one pass per context."""
        for uncond in (self.text_uncond, self.image_uncond):
            if uncond is None:
                continue
            if part in uncond.leaves_out:
                uncond.differs = True
                if block.kind == "image":  # a dropped image keeps its RoPE id reserved, as in training
                    uncond.sequence.rope += block.rope_span()
            else:
                uncond.pending.append(block)

    def query_cond(self, block: Block) -> torch.Tensor:
        """(Q, C) hidden states of a query block (not written) against the conditional context."""
        self.costs.forward_passes += 1
        return self.cond.run(block, write=False)

    def query_uncond(self, block: Block, which: Literal["text", "image"]) -> torch.Tensor | None:
        """Hidden states of a query against an unconditional context, or None when that context equals
        the conditional one (so the caller reuses the conditional velocity and saves the pass)."""
        uncond = self.text_uncond if which == "text" else self.image_uncond
        assert uncond is not None, f"no {which}-unconditional context was kept"
        if not uncond.differs:
            return None
        for pending in uncond.pending:
            uncond.sequence.run(pending, write=True)
        self.costs.forward_passes += len(uncond.pending) + 1
        self.costs.cfg_passes += len(uncond.pending) + 1
        uncond.pending.clear()
        return uncond.sequence.run(block, write=False)
