"""Prompt-lookup speculative decoding: draft text tokens from the sequence itself, verify them in one pass.

A plan repeats what came before it: a ``<des>`` restates the prompt's objects and the previous scene, an
``<ins>`` names objects the prompt named. So the tokens that followed the last occurrence of the n-gram the
text ends with are a good guess of what comes next (prompt lookup decoding, Saxena 2023; Hugging Face's
``prompt_lookup_num_tokens``). The loop feeds the last picked token and the guesses as one causal block,
reads the LM head at every row, and keeps the guesses the model agrees with:

- greedy decoding keeps a drafted token while it is the row's argmax, then takes the argmax after the
  last kept one: the same text as decoding one token a pass (up to floating-point ties);
- sampling keeps a drafted token d with probability p(d) and otherwise samples from p without d,
  renormalised, which is speculative sampling with a draft that puts all its mass on d: every emitted
  token follows the model's distribution exactly (not the same draws as one token a pass, though).

On a small trunk a pass is dispatch-bound, so a block of a few tokens costs little more than one token;
on BAGEL-7B decoding is memory-bound and the same holds. The guesses the model rejects are taken back out
of the KV cache (`pdgen.inference.context.Contexts.take_back`).

Shapes: K = drafted tokens, V = vocabulary.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch


def lookup_draft(
    history: Sequence[int], max_tokens: int, max_ngram: int, stop_before: Collection[int], end: int
) -> list[int]:
    """Up to `max_tokens` tokens that followed the latest earlier occurrence of the longest n-gram (n at
    most `max_ngram`) the history ends with; none when no n-gram recurs.

    The draft stops before any token of `stop_before` (tokens a text may not hold) and after `end` (the
    text's closing token: nothing is written past it).

    >>> lookup_draft([5, 6, 7, 8, 5, 6], max_tokens=3, max_ngram=2, stop_before=(), end=0)
    [7, 8, 5]
    """
    history = list(history)
    for n in range(min(max_ngram, len(history) - 1), 0, -1):
        suffix = history[-n:]
        for start in range(len(history) - n - 1, -1, -1):  # latest first, never the suffix itself
            if history[start + n - 1] != suffix[-1] or history[start : start + n] != suffix:
                continue
            draft = []
            for token in history[start + n : start + n + max_tokens]:
                if token in stop_before:
                    break
                draft.append(token)
                if token == end:
                    break
            return draft
    return []


def pick(logits: torch.Tensor, do_sample: bool, temperature: float, generator: torch.Generator) -> int:
    """Greedy or temperature sampling over (V,) logits (-inf marks a forbidden entry)."""
    if not do_sample:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def accept_draft(
    logits: torch.Tensor,
    draft: Sequence[int],
    do_sample: bool,
    temperature: float,
    generator: torch.Generator,
) -> list[int]:
    """The tokens a verify pass emits: the drafted tokens the model keeps, then one token of its own.

    Args:
        logits: (K+1, V) next-token logits at the fed token before the draft and at each drafted token
            (-inf marks a forbidden entry).
        draft: the K drafted tokens, in order.
        do_sample: speculative sampling (True) or greedy agreement (False).
        temperature: softmax temperature when sampling.
        generator: the run's random generator.

    Returns:
        the first j drafted tokens and one more token picked from row j (1 <= length <= K+1). With no
        draft this is one `pick`, drawing the same random numbers.
    """
    if not do_sample:
        best = logits.argmax(dim=-1).tolist()  # (K+1,): one op for every row
        kept = 0
        while kept < len(draft) and best[kept] == draft[kept]:
            kept += 1
        return [*draft[:kept], best[kept]]
    emitted: list[int] = []
    for row, token in zip(logits, draft, strict=False):  # row K (after the last draft) is read below
        probs = torch.softmax(row / temperature, dim=-1)
        if float(torch.rand((), generator=generator, device=row.device)) >= float(probs[token]):
            # Rejected: draw from the model's distribution with the rejected token removed.
            probs[token] = 0.0
            return [*emitted, int(torch.multinomial(probs, 1, generator=generator))]
        emitted.append(token)
    return [*emitted, pick(logits[len(emitted)], True, temperature, generator)]
