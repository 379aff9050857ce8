"""The embedded default's lossless autoencoder: exact round trip, FLUX's interface, a trunk that uses it."""

import pytest
import torch

from pdgen.models.bagel import AutoEncoderConfig, BagelConfig, BagelTrunk
from pdgen.models.bagel.pixel_autoencoder import PixelAutoEncoder


def test_encode_decode_is_exact_and_keeps_the_latent_grid():
    ae = PixelAutoEncoder(AutoEncoderConfig(kind="pixel", z_channels=12))
    images = torch.rand(2, 3, 32, 48) * 2 - 1
    latents = ae.encode(images)
    assert latents.shape == (2, 12, 16, 24) and ae.config.downsample == 2
    torch.testing.assert_close(ae.decode(latents), images, atol=1e-6, rtol=0)
    # Orthogonal channel map: the latent has the pixels' energy, so unit flow noise is the right size.
    torch.testing.assert_close(latents.pow(2).sum(), images.pow(2).sum())


def test_luminance_is_the_first_channel_of_each_cell():
    ae = PixelAutoEncoder(AutoEncoderConfig(kind="pixel", z_channels=12))
    grey = torch.full((1, 3, 2, 2), 0.5)
    latent = ae.encode(grey)[0, :, 0, 0]  # (12,): 4 luminance values, then 4 + 4 opponent values
    torch.testing.assert_close(latent[:4], torch.full((4,), 0.5 * 3**0.5))
    torch.testing.assert_close(latent[4:], torch.zeros(8), atol=1e-7, rtol=0)


def test_config_rejects_a_lossy_channel_count():
    with pytest.raises(ValueError, match="z_channels=16 must be in_channels=3 times a square"):
        AutoEncoderConfig(kind="pixel", z_channels=16)
    with pytest.raises(ValueError, match="kind='vq'"):
        AutoEncoderConfig(kind="vq")


def test_the_embedded_trunk_saves_and_loads_its_autoencoder(tmp_path):
    config = BagelConfig.from_name("embedded")
    assert config.latent_downsample == 4 and config.patch_latent_dim == 48 <= config.llm.hidden_size
    trunk = BagelTrunk(config)
    assert isinstance(trunk.vae, PixelAutoEncoder) and not trunk.vae.channel_map.requires_grad
    trunk.save_pretrained(tmp_path / "ckpt")
    loaded = BagelTrunk.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == config
    torch.testing.assert_close(loaded.vae.channel_map, trunk.vae.channel_map)
