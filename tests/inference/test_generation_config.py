"""GenerationConfig presets and the errors a bad value gets."""

import pytest

from pdgen.inference import GenerationConfig


def test_defaults_are_bagels_text_to_image_settings():
    config = GenerationConfig()
    assert (config.num_timesteps, config.timestep_shift) == (50, 3.0)
    assert (config.cfg_text_scale, config.cfg_img_scale, config.cfg_interval) == (4.0, 1.0, (0.4, 1.0))
    assert (config.cfg_renorm_type, config.do_sample, config.temperature) == ("global", False, 0.3)
    assert GenerationConfig.from_name("bagel-7b-mot") == config


def test_presets_take_overrides():
    config = GenerationConfig.from_name("tiny", mode="single_pass", cfg_interval=[0.0, 1.0])
    assert config.image_size == (64, 64) and config.mode == "single_pass"
    assert config.cfg_interval == (0.0, 1.0)  # lists from a YAML file become tuples


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mode", "think", "mode='think'"),
        ("num_timesteps", 1, "num_timesteps=1"),
        ("cfg_text_scale", 0.5, "cfg_text_scale=0.5"),
        ("cfg_interval", (0.8, 0.2), "cfg_interval"),
        ("cfg_renorm_type", "sphere", "cfg_renorm_type='sphere'"),
        ("temperature", 0.0, "temperature=0.0"),
        ("max_images", 0, "max_images=0"),
        ("image_size", (64,), "image_size"),
    ],
)
def test_bad_values_are_named(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GenerationConfig(**{field: value})


def test_unknown_preset():
    with pytest.raises(ValueError, match="known presets: bagel-7b-mot, tiny"):
        GenerationConfig.from_name("huge")
