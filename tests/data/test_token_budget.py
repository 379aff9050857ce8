"""The token-budget packer: packs filled to a budget, the best-fit buffer, nothing waiting forever."""

from dataclasses import dataclass

import pytest

from pdgen.data.token_budget import TokenBudget, TokenBudgetPacker


@dataclass(frozen=True)
class Item:
    """The packer needs nothing from a sample but its token count."""

    num_tokens: int


def packed(lengths, **budget):
    """Pack items of the given lengths; returns the pack lengths and the packer (for its stats)."""
    packer = TokenBudgetPacker([Item(n) for n in lengths], TokenBudget(**budget))
    return [[item.num_tokens for item in pack] for pack in packer], packer


def test_packer_fills_to_expected_and_tops_up_from_the_buffer():
    packs, packer = packed(
        (50, 60, 30, 85, 10, 40, 20), max_tokens=100, expected_tokens=90, max_tokens_per_sample=80
    )
    assert packs == [
        [50, 30, 10],  # 60 would overflow and waits in the buffer; 90 is reached with the 10
        [60, 40],  # the next pack starts from the buffer
        [20],  # the end of the stream flushes the last pack
    ]
    assert packer.stats.skipped == 1  # the 85 is longer than max_tokens_per_sample
    assert (packer.stats.packs, packer.stats.samples, packer.stats.tokens) == (3, 6, 210)
    assert packer.stats.padding_fraction == pytest.approx(1 - 210 / 300)


def test_packer_tops_up_with_the_largest_buffered_sample_that_fits():
    packs, _ = packed((80, 30, 45, 55, 15), max_tokens=100, expected_tokens=95, max_tokens_per_sample=100)
    # 30, 45 and 55 wait; 15 makes 95 and the pack goes. The next one takes 55 first, then 45 (BAGEL's
    # oldest-first order would stop at 30 + 45 = 75).
    assert packs == [[80, 15], [55, 45], [30]]


def test_packer_rechooses_the_fullest_pack_when_the_buffer_overflows():
    budget = dict(max_tokens=100, expected_tokens=100, max_tokens_per_sample=100, max_buffer_size=2)
    packs, packer = packed((50, 60, 45, 55, 30), **budget)
    # [50, 45] waits for a 5; 60, 55, 30 overflow the buffer. The fullest pack with the oldest buffered
    # sample (60) is [60, 30]; then [55, 45] is full, and the stream's end drains [50].
    assert packs == [[60, 30], [55, 45], [50]]
    assert packer.stats.padding_fraction == pytest.approx(1 - 240 / 300)


def test_packer_drains_the_buffer_into_the_fullest_packs():
    packs, _ = packed((70, 40, 35, 25, 30), max_tokens=100, expected_tokens=100, max_tokens_per_sample=100)
    assert packs == [[70, 30], [25, 40, 35]]


def test_packer_lets_nothing_wait_forever():
    budget = dict(max_tokens=100, expected_tokens=100, max_tokens_per_sample=100, max_buffer_size=1)
    packs, packer = packed((60, 60, 60, 60), **budget)
    assert packs == [[60], [60], [60], [60]]
    assert packer.stats.padding_fraction == pytest.approx(0.4)


def test_budget_around_and_checks():
    assert TokenBudget.around(33_000) == TokenBudget(33_000, 32_010, 33_000, 50)
    with pytest.raises(ValueError, match="expected_tokens=200"):
        TokenBudget(max_tokens=100, expected_tokens=200)
    with pytest.raises(ValueError, match="max_tokens_per_sample=200"):
        TokenBudget(max_tokens=100, expected_tokens=50, max_tokens_per_sample=200)
