"""Prompt-lookup drafts and their verification: what is drafted, what greedy and sampled decoding keep."""

import torch

from pdgen.inference.drafting import accept_draft, lookup_draft, pick

END = 0  # the closing token in these examples


def draft(history, max_tokens=4, max_ngram=3, stop_before=()):
    return lookup_draft(history, max_tokens, max_ngram, stop_before, END)


def test_a_draft_continues_the_latest_earlier_occurrence_of_the_longest_matching_ngram():
    #            a  b  c  X  a  b  d  Y  a  b
    history = [1, 2, 3, 9, 1, 2, 4, 8, 1, 2]
    assert draft(history) == [4, 8, 1, 2]  # "a b" last seen before "d Y"
    assert draft([*history, 3]) == [9, 1, 2, 4]  # "a b c" matched as a whole, at the start
    assert draft([7, 1, 2, 3, 5, 6, 2, 3], max_ngram=1) == [5, 6, 2, 3]  # only "3" is matched, once
    assert draft([7, 1, 2, 3, 5, 6, 2, 3], max_ngram=2) == [5, 6, 2, 3]


def test_no_recurring_ngram_drafts_nothing():
    assert draft([1, 2, 3, 4]) == []
    assert draft([5]) == [] and draft([]) == []


def test_a_draft_is_cut_to_its_length_before_a_forbidden_token_and_after_the_closing_one():
    history = [1, 2, 3, 4, 5, 6, 1, 2]
    assert draft(history, max_tokens=2) == [3, 4]
    assert draft(history, stop_before={5}) == [3, 4]
    assert draft([1, 2, 3, END, 7, 1, 2]) == [3, END]


def logits_favouring(*tokens, vocab=6):
    """(len(tokens), vocab) logits whose row i has its maximum at tokens[i]."""
    rows = torch.zeros(len(tokens), vocab)
    rows[torch.arange(len(tokens)), torch.tensor(tokens)] = 5.0
    return rows


def test_greedy_keeps_the_drafted_tokens_the_model_agrees_with_then_adds_its_own():
    generator = torch.Generator().manual_seed(0)
    logits = logits_favouring(3, 4, 1, 2)  # the model would write 3 4 1, then 2
    assert accept_draft(logits, [3, 4, 5], False, 1.0, generator) == [3, 4, 1]
    assert accept_draft(logits, [3, 4, 1], False, 1.0, generator) == [3, 4, 1, 2]  # all kept, one more
    assert accept_draft(logits, [5, 4, 1], False, 1.0, generator) == [3]
    assert accept_draft(logits[:1], [], False, 1.0, generator) == [3]


def test_with_no_draft_acceptance_is_one_pick_and_draws_the_same_random_numbers():
    logits = torch.tensor([[0.3, 1.0, -0.2, 0.5]])
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(20):
        assert accept_draft(logits, [], True, 0.8, a) == [pick(logits[0], True, 0.8, b)]


def test_sampled_tokens_follow_the_model_distribution_whatever_was_drafted():
    """Speculative sampling is exact: the first emitted token is distributed as softmax(row 0 / T) whether
    the draft is the likely token, an unlikely one or none."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 0.0, 3.0, 0.0]])
    temperature, n = 0.7, 6_000
    expected = torch.softmax(logits[0] / temperature, dim=-1)
    for drafted in ([0], [3], []):
        generator = torch.Generator().manual_seed(len(drafted) + drafted[:1].count(3))
        counts = torch.zeros(4)
        for _ in range(n):
            counts[accept_draft(logits[: 1 + len(drafted)], drafted, True, temperature, generator)[0]] += 1
        sigma = (expected * (1 - expected) / n).sqrt()
        assert ((counts / n - expected).abs() < 4 * sigma + 1e-3).all(), (drafted, counts / n, expected)
