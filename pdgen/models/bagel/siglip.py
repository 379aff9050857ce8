"""SigLIP NaViT vision encoder as BAGEL uses it, with varlen attention in pure PyTorch.

Images of any size arrive *packed*: the patches of every image in one (N, 3*p*p) tensor, with each
image's patch count in `seqlens` and each patch's flattened grid id `row * max_patches_per_side + col`
in `position_ids`. A patch vector is flattened in (row-in-patch, col-in-patch, channel) order, which is
why the patch embedding is a `Linear` (BAGEL converts SigLIP's conv to it; the release stores the 2-D
[1152, 588] weight).

Attention is bidirectional inside an image and blocked between images (upstream uses
`flash_attn_varlen_func`; here a block-diagonal boolean mask with SDPA does the same on any device).
BAGEL's differences from Hugging Face SigLIP: learned absolute positions indexed by grid id (no
interpolation), the last encoder layer dropped (`vit_select_layer = -2`) but `post_layernorm` kept, no
pooling head.

Shapes: N = packed patches of all images, C = ViT hidden size, H = heads, D = head dim, P = 3 * p * p.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdgen.models.bagel.config import ViTConfig


def block_diagonal_mask(seqlens: torch.Tensor) -> torch.Tensor:
    """(N, N) bool mask, True where two patches belong to the same image; `seqlens` (num_images,)."""
    image_id = torch.repeat_interleave(torch.arange(seqlens.numel(), device=seqlens.device), seqlens)  # (N,)
    return image_id[:, None] == image_id[None, :]


class SiglipEmbeddings(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        """Patch projection plus learned position embedding.

        Args:
            config: vision encoder config.
        """
        super().__init__()
        self.patch_embedding = nn.Linear(config.patch_dim, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_patches_per_side**2, config.hidden_size)

    def forward(self, patches: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.patch_embedding(patches) + self.position_embedding(position_ids)  # (N, C)


class SiglipAttention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        """Multi-head self-attention with biases.

        Args:
            config: vision encoder config.
        """
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        c = config.hidden_size
        self.q_proj = nn.Linear(c, c)
        self.k_proj = nn.Linear(c, c)
        self.v_proj = nn.Linear(c, c)
        self.out_proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = (
            proj(x).view(n, self.num_heads, self.head_dim).transpose(0, 1)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )  # (H, N, D) each
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (H, N, D)
        return self.out_proj(out.transpose(0, 1).reshape(n, -1))  # (N, C)


class SiglipMLP(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        """fc1 -> tanh-GELU -> fc2.

        Args:
            config: vision encoder config.
        """
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        """Pre-LayerNorm transformer block.

        Args:
            config: vision encoder config.
        """
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        """The used encoder layers (`config.num_layers`).

        Args:
            config: vision encoder config.
        """
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(config) for _ in range(config.num_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class SiglipVisionTransformer(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        """Embeddings, encoder, post-LayerNorm.

        Args:
            config: vision encoder config.
        """
        super().__init__()
        self.embeddings = SiglipEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, patches: torch.Tensor, position_ids: torch.Tensor, seqlens: torch.Tensor
    ) -> torch.Tensor:
        mask = block_diagonal_mask(seqlens)  # (N, N)
        x = self.embeddings(patches, position_ids)
        return self.post_layernorm(self.encoder(x, mask))


class SiglipVisionModel(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        """Wrapper that gives the release's key prefix `vit_model.vision_model.`.

        Args:
            config: vision encoder config.
        """
        super().__init__()
        self.config = config
        self.vision_model = SiglipVisionTransformer(config)

    def forward(
        self, patches: torch.Tensor, position_ids: torch.Tensor, seqlens: torch.Tensor
    ) -> torch.Tensor:
        """Encodes packed patches.

        Args:
            patches: (N, P) patch vectors of all images, image after image.
            position_ids: (N,) flattened grid ids `row * max_patches_per_side + col`.
            seqlens: (num_images,) patches per image; sums to N.

        Returns:
            (N, C) patch features.
        """
        total = int(seqlens.sum())
        if total != patches.shape[0]:
            raise ValueError(f"SigLIP: vit_token_seqlens sum to {total}, not {patches.shape[0]} patches")
        return self.vision_model(patches, position_ids, seqlens)
