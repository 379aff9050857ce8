"""Packing configs: presets and their checks, and the one mapping from a trunk to its packs' geometry."""

import dataclasses

import pytest

from pdgen.data.packing_config import PackingConfig, PackingGeometry
from pdgen.models.bagel.config import BagelConfig


def test_config_checks_and_model_geometry():
    with pytest.raises(ValueError, match="vae_max_size=2048 gives 128 tokens per side"):
        PackingConfig(vae_max_size=2048)
    with pytest.raises(ValueError, match="vit_images='some'"):
        PackingConfig(vit_images="some")
    with pytest.raises(ValueError, match="unknown packing preset 'huge'"):
        PackingConfig.from_name("huge")
    from pdgen.models.bagel.config import BagelConfig

    for name in ("tiny", "bagel-7b-mot"):
        assert PackingConfig.for_model(
            BagelConfig.from_name(name), **_policy(name)
        ) == PackingConfig.from_name(name)


def _policy(name):
    preset = PackingConfig.from_name(name)
    return {f: getattr(preset, f) for f in ("vae_min_size", "vae_max_size", "vit_min_size", "vit_max_size")}


def test_a_trunks_geometry_replaces_the_presets_and_caps_its_sizes():
    embedded = BagelConfig.from_name("embedded")
    geometry = PackingGeometry.of_trunk(embedded)
    assert geometry == PackingGeometry(
        embedded.latent_downsample, embedded.max_latent_size, embedded.vit.patch_size,
        embedded.vit.max_patches_per_side,
    )  # fmt: skip
    packing = PackingConfig.from_name("tiny").for_trunk(embedded)
    assert packing.geometry == geometry and packing == PackingConfig.from_name("tiny").with_geometry(geometry)
    assert packing.vae_max_size == min(64, geometry.latent_downsample * geometry.max_latent_size)
    assert packing.vit_max_size == min(64, geometry.vit_patch_size * geometry.vit_max_patches_per_side)
    assert packing.vit_images == "inspected"  # the policy is the preset's
    tiny = PackingConfig.from_name("tiny")
    assert tiny.with_geometry(None) is tiny and tiny.for_trunk(BagelConfig.from_name("tiny")) == tiny


def test_geometry_mismatches_name_the_field_and_both_values():
    tiny = PackingConfig.from_name("tiny").geometry
    other = dataclasses.replace(tiny, max_latent_size=8)
    assert tiny.mismatches(other) == ["max_latent_size=16 (trunk: 8)"]
    assert tiny.mismatches(tiny) == []
