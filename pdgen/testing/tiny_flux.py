"""`save_tiny_flux_kontext`: a random Flux-Kontext pipeline of toy size, made from configs and saved locally.

The Flux-Kontext editor's tests run diffusers' real ``FluxKontextPipeline`` code path, the one that runs on a
GPU with the released weights, on components small enough for a CPU: a one-block Flux transformer, a one-level
autoencoder, two-layer CLIP and T5 text encoders, and tokenizers whose vocabularies are written here (letters
and digits), so nothing is downloaded. The images it makes are noise; what is tested is the plumbing (loading
a directory, batching, seeding, sizes, the build that calls it).
"""

from __future__ import annotations

import string
from pathlib import Path

from pdgen.editors.flux_kontext import require_diffusers

TINY_SIZE = 32
"""The side of the images the tiny pipeline is meant to make."""


def save_tiny_flux_kontext(path: str | Path, seed: int = 0) -> Path:
    """Build a tiny random ``FluxKontextPipeline`` and save it to ``path``; returns the path."""
    import torch
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5Tokenizer,
    )

    diffusers = require_diffusers()
    torch.manual_seed(seed)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,  # Flux packs 2x2 latent patches: 4 x the autoencoder's one latent channel
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    vae = diffusers.AutoencoderKL(
        sample_size=TINY_SIZE,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
            num_attention_heads=4, num_hidden_layers=2, vocab_size=128, projection_dim=32,
        )
    )  # fmt: skip
    t5 = T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4))
    letters = string.ascii_lowercase + string.digits + ".,"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in letters:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(f"{c}</w>", len(vocab))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -1.0) for c in string.ascii_letters + string.digits + ".,"]
    pipeline = diffusers.FluxKontextPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        text_encoder_2=t5,
        tokenizer_2=T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=64),
        transformer=transformer,
    )
    pipeline.save_pretrained(str(path))
    return Path(path)
