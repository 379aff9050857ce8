import math

import torch

from pdgen.models.bagel.embeddings import PositionEmbedding, TimestepEmbedder, sincos_2d, timestep_sinusoid


def test_timestep_sinusoid_is_cos_then_sin_of_raw_t():
    t = torch.tensor([0.0, 0.5])
    features = timestep_sinusoid(t)
    assert features.shape == (2, 256)
    assert torch.equal(features[0, :128], torch.ones(128)), "cos half first: cos(0) = 1"
    assert torch.equal(features[0, 128:], torch.zeros(128))
    # Lowest frequency is 1: t enters unscaled (not t * 1000).
    assert math.isclose(features[1, 0].item(), math.cos(0.5), rel_tol=1e-6)
    assert math.isclose(features[1, 128].item(), math.sin(0.5), rel_tol=1e-6)


def test_timestep_embedder_keys():
    assert set(TimestepEmbedder(8).state_dict()) == {
        "mlp.0.weight",
        "mlp.0.bias",
        "mlp.2.weight",
        "mlp.2.bias",
    }


def test_sincos_2d_first_half_encodes_column_second_half_row():
    dim, side = 8, 5
    table = sincos_2d(dim, side)  # (25, 8)
    row, col = 2, 3
    entry = table[row * side + col]
    # each half: [sin(p w0), sin(p w1), cos(p w0), cos(p w1)] with w = (1, 1/100)
    expected_col = torch.tensor(
        [math.sin(3), math.sin(0.03), math.cos(3), math.cos(0.03)], dtype=torch.float64
    )
    expected_row = torch.tensor(
        [math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)], dtype=torch.float64
    )
    torch.testing.assert_close(entry, torch.cat([expected_col, expected_row]))


def test_position_table_is_recomputed_in_place_of_whatever_was_loaded():
    embed = PositionEmbedding(max_side=4, hidden_size=8)
    embed.pos_embed.zero_()
    embed.reset_buffers(dtype=torch.bfloat16)
    assert embed.pos_embed.dtype == torch.bfloat16
    torch.testing.assert_close(embed.pos_embed, sincos_2d(8, 4).to(torch.bfloat16))
    assert torch.equal(embed(torch.tensor([5])), embed.pos_embed[5:6])


def test_position_table_on_meta_allocates_nothing():
    with torch.device("meta"):
        embed = PositionEmbedding(max_side=64, hidden_size=3584)
    assert embed.pos_embed.is_meta and embed.pos_embed.shape == (4096, 3584)
