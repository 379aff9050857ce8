"""BAGEL's packed attention rule on hand-built packs, and the per-token metadata it reads."""

import pytest
import torch

from pdgen.models.mask import PackedAttentionMeta, SplitMode


def test_rule_on_text_noised_image_clean_image_text():
    # One trajectory step: prompt text (3), noised target image (2), its clean copy (2), next text (2).
    meta = PackedAttentionMeta.from_splits([9], [3, 2, 2, 2], ["causal", "noise", "full", "causal"])
    expected = torch.tensor([
        # t t t N N C C t t     (t text, N noised image, C clean image)
        [1, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0],  # the noised image sees the prefix and all of itself
        [1, 1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 1, 1, 0, 0],  # the clean copy cannot read the noised one
        [1, 1, 1, 0, 0, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 1, 1, 1, 0],  # later text reads the clean copy, never the noised one
        [1, 1, 1, 0, 0, 1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(meta.dense_mask(), expected)


def test_rule_keeps_samples_apart():
    meta = PackedAttentionMeta.from_splits([3, 2], [1, 2, 2], ["causal", "full", "causal"])
    expected = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0],  # a full split sees its whole self ...
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],  # ... and nothing of the next sample
        [0, 0, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(meta.dense_mask(), expected)


def test_from_splits_expands_per_token_metadata():
    meta = PackedAttentionMeta.from_splits([3, 1], [1, 2, 1], ["causal", SplitMode.NOISE, "causal"])
    assert meta.sample_id.tolist() == [0, 0, 0, 1]
    assert meta.split_id.tolist() == [0, 1, 1, 2]
    assert meta.mode.tolist() == [0, 2, 2, 0]


@pytest.mark.parametrize(
    ("sample_lens", "split_lens", "modes", "message"),
    [
        ([3], [1, 2], ["causal"], "2 split_lens but 1 split_modes"),
        ([3], [1, 3], ["causal", "full"], "splits cover 4 tokens but samples cover 3"),
        ([2, 2], [1, 2, 1], ["causal", "full", "causal"], "split 1 crosses the end of sample 0"),
        ([2], [2], ["blurry"], "unknown split mode 'blurry'"),
        ([0, 2], [2], ["full"], "lengths must be positive"),
    ],
)
def test_from_splits_rejects_inconsistent_layouts(sample_lens, split_lens, modes, message):
    with pytest.raises(ValueError, match=message):
        PackedAttentionMeta.from_splits(sample_lens, split_lens, modes)
