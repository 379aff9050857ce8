"""Routing of the Mixture-of-Transformers: text/ViT tokens never touch `*_moe_gen`, VAE tokens use only it."""

import pytest
import torch
from bagel_testkit import INSPECTED

from pdgen.models.bagel.config import LLMConfig
from pdgen.models.bagel.qwen2_mot import (
    ExpertRoute,
    MoTDecoderLayer,
    RMSNorm,
    RotaryEmbedding,
    Streams,
    apply_rope,
)


def self_only(layer, q, k, v):
    """An `attend` where each token sees only itself: makes every token's output a function of that token."""
    return v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)


def perturb(model, keep) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not keep(name):
                param.add_(torch.randn_like(param))


def test_text_only_outputs_do_not_depend_on_generation_weights(tiny_trunk, text_pack):
    pack = text_pack(9, 5)
    before = tiny_trunk(pack).hidden_states
    perturb(tiny_trunk, keep=lambda name: "_moe_gen" not in name)
    after = tiny_trunk(pack).hidden_states
    assert torch.equal(before, after)
    after.sum().backward()
    gen_grads = [p.grad for name, p in tiny_trunk.named_parameters() if "_moe_gen" in name]
    assert gen_grads and all(g is None for g in gen_grads)


def test_vae_tokens_use_only_generation_weights_and_text_only_understanding_weights(tiny_trunk, tiny_config):
    model = tiny_trunk.language_model.model
    x = torch.randn(10, tiny_config.llm.hidden_size)
    gen_mask = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    positions = torch.arange(10)
    reference = model(x, positions, gen_mask, self_only)

    perturb(model, keep=lambda name: "_moe_gen" in name or name.startswith("embed_tokens"))
    und_perturbed = model(x, positions, gen_mask, self_only)
    assert torch.equal(und_perturbed[gen_mask], reference[gen_mask]), (
        "VAE tokens read an understanding weight"
    )
    assert not torch.allclose(und_perturbed[~gen_mask], reference[~gen_mask])

    reference = und_perturbed
    perturb(model, keep=lambda name: "_moe_gen" not in name)
    gen_perturbed = model(x, positions, gen_mask, self_only)
    assert torch.equal(gen_perturbed[~gen_mask], reference[~gen_mask]), (
        "a text token read a generation weight"
    )
    assert not torch.allclose(gen_perturbed[gen_mask], reference[gen_mask])


def test_every_expert_module_sees_exactly_its_tokens(tiny_trunk, pack_of):
    pack = pack_of([INSPECTED])
    rows: dict[str, int] = {}
    layer = tiny_trunk.language_model.model.layers[0]
    hooks = [
        module.register_forward_hook(lambda m, args, out, name=name: rows.__setitem__(name, args[0].shape[0]))
        for name, module in layer.named_modules()
        if name.split(".")[-1]
        in {
            "input_layernorm",
            "input_layernorm_moe_gen",
            "mlp",
            "mlp_moe_gen",
            "q_proj",
            "q_proj_moe_gen",
            "o_proj",
            "o_proj_moe_gen",
            "k_norm",
            "k_norm_moe_gen",
        }
    ]
    tiny_trunk(pack)
    for hook in hooks:
        hook.remove()
    n_vae = pack.packed_vae_token_indexes.numel()
    n_und = pack.sequence_length - n_vae
    assert n_vae == 2 * (2 * 3) + 2 * (2 * 2), "noised and clean copies of a 2x3 and a 2x2 latent grid"
    for name, count in rows.items():
        assert count == (n_vae if name.endswith("_moe_gen") else n_und), name


def causal(layer, q, k, v):
    """An `attend`: causal attention over the block itself."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True
    )
    return out.transpose(0, 1)


def one_layer(qk_norm: bool) -> LLMConfig:
    """A one-layer language model with grouped heads (4 query heads, 2 key-value heads)."""
    return LLMConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=96,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        qk_norm=qk_norm,
    )


@pytest.mark.parametrize("qk_norm", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_text_only_block_takes_the_short_path_to_the_numbers_of_the_routed_one(qk_norm, dtype):
    """With no VAE token the layer skips routing and norms and rotates q and k together; the result is the
    layer's routed arithmetic, number for number."""
    config = one_layer(qk_norm)
    torch.manual_seed(0)
    layer = MoTDecoderLayer(config, 0).to(dtype)
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(std=0.3)  # norms and biases too: a fresh init's ones and zeros hide mix-ups
    x = torch.randn(7, 64, dtype=dtype)
    rope = RotaryEmbedding(config.head_dim, config.rope_theta)(torch.arange(3, 10), dtype)
    route = ExpertRoute.from_gen_mask(torch.zeros(7, dtype=torch.bool))
    assert route.understanding_only

    attn = layer.self_attn
    h = layer.input_layernorm(x)
    q = attn.q_norm(attn.q_proj(h).view(7, 4, -1))
    k = attn.k_norm(attn.k_proj(h).view(7, 2, -1))
    v = attn.v_proj(h).view(7, 2, -1)
    out = causal(0, apply_rope(q, *rope), apply_rope(k, *rope), v)
    routed = x + attn.o_proj(out.reshape(7, -1))
    routed = routed + layer.mlp(layer.post_attention_layernorm(routed))

    out = layer(route.split(x), route, Streams(rope, None), causal)
    torch.testing.assert_close(out.und, routed, rtol=0, atol=0)


def test_the_short_path_calls_the_projection_modules_so_adapters_apply():
    """LoRA and quantized layers replace the projections' modules: the short path must call them."""
    config = one_layer(qk_norm=True)
    layer = MoTDecoderLayer(config, 0)
    called = []
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        getattr(layer.self_attn, name).register_forward_hook(lambda m, a, o, name=name: called.append(name))
    layer.mlp.register_forward_hook(lambda m, a, o: called.append("mlp"))
    rope = RotaryEmbedding(config.head_dim, config.rope_theta)(torch.arange(5), torch.float32)
    route = ExpertRoute.from_gen_mask(torch.zeros(5, dtype=torch.bool))
    layer(route.split(torch.randn(5, 64)), route, Streams(rope, None), causal)
    assert called == ["q_proj", "k_proj", "v_proj", "o_proj", "mlp"]


def test_route_split_and_merge_put_rows_back_in_sequence_order():
    route = ExpertRoute.from_gen_mask(torch.tensor([False, True, False, True]))
    rows = route.split(torch.arange(4.0)[:, None])
    assert rows.und.flatten().tolist() == [0, 2] and rows.gen.flatten().tolist() == [1, 3]
    out = route.merge(Streams(rows.und + 100, rows.gen - 100))
    assert out.flatten().tolist() == [100, -99, 102, -97]


@pytest.mark.parametrize("gen_mask", [[False, False, False], [True, True, True]])
def test_a_one_expert_sequence_is_split_into_views(gen_mask):
    route = ExpertRoute.from_gen_mask(torch.tensor(gen_mask))
    x = torch.randn(3, 2)
    rows = route.split(x)
    whole, empty = (rows.gen, rows.und) if gen_mask[0] else (rows.und, rows.gen)
    assert whole.data_ptr() == x.data_ptr() and empty.shape == (0, 2)
    assert route.merge(rows) is whole


def test_rmsnorm_scales_to_unit_root_mean_square():
    norm = RMSNorm(4, eps=1e-6)
    x = torch.tensor([[3.0, -3.0, 3.0, -3.0]])
    torch.testing.assert_close(norm(x), torch.tensor([[1.0, -1.0, 1.0, -1.0]]))


def test_rmsnorm_of_bfloat16_normalises_in_float32_and_casts_before_the_weight():
    norm = RMSNorm(8, eps=1e-6).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16) * 7
    x32 = x.float()
    expected = norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected)  # Qwen2's order: the weight multiplies the bf16-rounded norm


def test_rope_is_relative_query_key_products_depend_on_distance_only(tiny_trunk):
    rotary = tiny_trunk.language_model.model.rotary_emb
    q, k = torch.randn(1, 1, 16), torch.randn(1, 1, 16)

    def score(pq, pk):
        cq, sq = rotary(torch.tensor([pq]), torch.float32)
        ck, sk = rotary(torch.tensor([pk]), torch.float32)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    torch.testing.assert_close(score(7, 3), score(104, 100))


def rotate_half_rope(x, positions, rotary):
    """Hugging Face Qwen2's RoPE: ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = (-x2, x1)``."""
    angles = positions.float()[:, None] * rotary.inv_freq[None, :]  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None, :]  # (T, 1, D)
    first, second = x.chunk(2, dim=-1)
    return x * angles.cos() + torch.cat([-second, first], dim=-1) * angles.sin()


def test_rope_equals_the_rotate_half_formula_forward_and_backward():
    rotary = RotaryEmbedding(head_dim=32, theta=10000.0)
    positions = torch.tensor([0, 1, 7, 7, 4095])  # text ids and an image's shared id
    x = torch.randn(5, 3, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    grad_out = torch.randn(5, 3, 32, generator=torch.Generator().manual_seed(1))

    ours = apply_rope(x, *rotary(positions, torch.float32))
    (ours_grad,) = torch.autograd.grad(ours, x, grad_out)
    reference = rotate_half_rope(x, positions, rotary)
    (reference_grad,) = torch.autograd.grad(reference, x, grad_out)

    assert torch.equal(ours, reference)
    assert torch.equal(ours_grad, reference_grad)


def test_the_signed_sin_is_negative_on_the_first_half():
    cos, signed_sin = RotaryEmbedding(head_dim=8, theta=10000.0)(torch.tensor([3]), torch.float32)
    assert cos.shape == signed_sin.shape == (1, 1, 8)
    torch.testing.assert_close(signed_sin[..., :4], -signed_sin[..., 4:])
    assert (signed_sin[..., :4] < 0).all(), "sin(3 * theta^(-2i/D)) > 0 for these frequencies"
