import dataclasses

import pytest

from pdgen.models.bagel import PRESETS, BagelConfig, LLMConfig, ViTConfig


def test_presets_share_one_registry_and_derive_bagel_fields():
    assert set(PRESETS) == {"bagel-7b-mot", "tiny", "embedded"}
    release = BagelConfig.from_name("bagel-7b-mot")
    assert release.llm.head_dim == 128
    assert release.vit.max_patches_per_side == 70 and release.vit.patch_dim == 588
    assert release.patch_latent_dim == 64 and release.latent_downsample == 16
    tiny = BagelConfig.from_name("tiny")
    assert tiny.patch_latent_dim == 64, "z_channels stays 16 so the latent token width matches the release"
    assert tiny.vae.downsample == 8


def test_from_name_overrides_and_rejects_unknown_names():
    assert BagelConfig.from_name("tiny", max_latent_size=8).max_latent_size == 8
    with pytest.raises(ValueError, match="unknown BAGEL preset 'bagel-14b'"):
        BagelConfig.from_name("bagel-14b")


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BagelConfig.from_name("tiny").max_latent_size = 4


def test_invalid_shapes_are_value_errors_naming_the_values():
    with pytest.raises(ValueError, match="num_heads=4 is not divisible by num_kv_heads=3"):
        LLMConfig(
            vocab_size=8, hidden_size=64, intermediate_size=8, num_layers=1, num_heads=4, num_kv_heads=3
        )
    with pytest.raises(ValueError, match="image_size=100 is not a multiple of patch_size=14"):
        ViTConfig(
            hidden_size=32, intermediate_size=8, num_heads=2, num_layers=1, patch_size=14, image_size=100
        )


def test_release_json_round_trip_keeps_vit_layer_convention():
    release = BagelConfig.from_name("bagel-7b-mot")
    vit_json = release.vit.to_vit_json()
    assert vit_json["num_hidden_layers"] == 27, "the file counts so400m's 27 layers; BAGEL uses 26"
    assert ViTConfig.from_vit_json(vit_json) == release.vit
    assert LLMConfig.from_llm_json(release.llm.to_llm_json()) == release.llm


def test_llm_json_errors_name_the_file_and_field():
    with pytest.raises(ValueError, match="ckpt/llm_config.json: missing field\\(s\\) vocab_size"):
        LLMConfig.from_llm_json({"hidden_size": 8}, "ckpt/llm_config.json")
    doc = BagelConfig.from_name("tiny").llm.to_llm_json() | {"tie_word_embeddings": True}
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        LLMConfig.from_llm_json(doc)


@pytest.mark.parametrize("name", ["bagel-7b-mot", "tiny"])
def test_packing_preset_of_the_same_name_has_the_trunk_geometry(name):
    from pdgen.data.packing import PackingConfig

    packing, model = PackingConfig.from_name(name), BagelConfig.from_name(name)
    assert packing == PackingConfig.for_model(
        model,
        **{
            field: getattr(packing, field)
            for field in ("vae_min_size", "vae_max_size", "vit_min_size", "vit_max_size", "vit_images")
        },
    )
