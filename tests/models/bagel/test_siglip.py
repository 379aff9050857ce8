import pytest
import torch

from pdgen.models.bagel.siglip import SiglipVisionModel, block_diagonal_mask


def test_block_diagonal_mask():
    mask = block_diagonal_mask(torch.tensor([2, 1]))
    assert mask.tolist() == [[True, True, False], [True, True, False], [False, False, True]]


def test_packed_images_encode_as_if_alone(tiny_config):
    torch.manual_seed(0)
    vit = SiglipVisionModel(tiny_config.vit)
    side = tiny_config.vit.max_patches_per_side
    a, b = torch.randn(6, tiny_config.vit.patch_dim), torch.randn(4, tiny_config.vit.patch_dim)
    pos_a = torch.tensor([r * side + c for r in range(2) for c in range(3)])
    pos_b = torch.tensor([r * side + c for r in range(2) for c in range(2)])
    packed = vit(torch.cat([a, b]), torch.cat([pos_a, pos_b]), torch.tensor([6, 4]))
    alone = torch.cat([vit(a, pos_a, torch.tensor([6])), vit(b, pos_b, torch.tensor([4]))])
    torch.testing.assert_close(packed, alone)


def test_seqlens_must_cover_the_patches(tiny_config):
    vit = SiglipVisionModel(tiny_config.vit)
    with pytest.raises(ValueError, match="vit_token_seqlens sum to 3, not 4 patches"):
        vit(torch.randn(4, tiny_config.vit.patch_dim), torch.arange(4), torch.tensor([3]))
