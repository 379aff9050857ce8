"""Sequences and guidance contexts: cached equals recomputed block by block, and what each context holds."""

import torch

from pdgen.inference import Costs
from pdgen.inference.context import Block, CachedSequence, Contexts, RecomputedSequence


def blocks(trunk, seed=0):
    """A text block, an image block and a query: the three things the loop sends."""
    g = torch.Generator().manual_seed(seed)
    c = trunk.config.llm.hidden_size

    def block(n, kind, gen):
        return Block(torch.randn(n, c, generator=g), torch.full((n,), gen), kind)

    return block(5, "text", False), block(6, "image", True), block(6, "image", True)


@torch.no_grad()
def test_a_cached_sequence_computes_what_the_recomputed_one_does(trunk):
    text, image, query = blocks(trunk)
    cached, recomputed = CachedSequence(trunk), RecomputedSequence(trunk)
    for block, write in ((text, True), (image, True), (query, False), (text, True)):
        torch.testing.assert_close(
            cached.run(block, write), recomputed.run(block, write), atol=1e-5, rtol=1e-5
        )
    assert cached.rope == recomputed.rope == 5 + 1 + 5  # text ids are consecutive, an image takes one id
    assert len(cached.cache) == 5 + 6 + 5  # the query was never written


@torch.no_grad()
def test_each_unconditional_context_leaves_out_its_part_and_runs_only_when_queried(trunk):
    prompt, image, query = blocks(trunk)
    costs = Costs()
    contexts = Contexts(trunk, text_guidance=True, image_guidance=True, kv_cache=True, costs=costs)
    contexts.write(prompt, "prompt")
    assert contexts.query_uncond(query, "image") is None  # no image yet: it equals the conditional context
    contexts.write(image, "image")
    assert costs.forward_passes == 2 and costs.cfg_passes == 0  # nothing ran for the unconditional ones yet

    contexts.query_uncond(query, "text")  # writes the image first, then the query: 2 passes
    contexts.query_uncond(query, "image")  # writes the prompt first, then the query: 2 passes
    assert costs.cfg_passes == 4 and costs.forward_passes == 6
    text_uncond, image_uncond = contexts.text_uncond.sequence, contexts.image_uncond.sequence
    assert len(text_uncond.cache) == 6 and text_uncond.rope == 1  # the image only, at id 0
    assert len(image_uncond.cache) == 5 and image_uncond.rope == 6  # the prompt, the image's id reserved


@torch.no_grad()
def test_rewinding_takes_back_what_was_written_since_the_snapshot(trunk):
    text, image, query = blocks(trunk)
    for sequence in (CachedSequence(trunk), RecomputedSequence(trunk)):
        sequence.run(text, write=True)
        before = sequence.run(query, write=False)
        snapshot = sequence.snapshot()
        sequence.run(image, write=True)
        sequence.run(text, write=True)
        sequence.rewind(snapshot)
        assert sequence.rope == 5
        torch.testing.assert_close(sequence.run(query, write=False), before, atol=0, rtol=0)
        sequence.run(image, write=True)
        sequence.rewind(snapshot)  # a snapshot can be rewound to again
        torch.testing.assert_close(sequence.run(query, write=False), before, atol=0, rtol=0)
