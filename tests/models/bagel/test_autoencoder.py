import pytest
import torch

from pdgen.models.bagel.autoencoder import AutoEncoder


@pytest.fixture
def tiny_ae(tiny_config) -> AutoEncoder:
    torch.manual_seed(0)
    return AutoEncoder(tiny_config.vae).eval()


def test_shapes_downsample_by_8_into_16_channels(tiny_ae):
    images = torch.rand(2, 3, 32, 48) * 2 - 1
    latents = tiny_ae.encode(images)
    assert latents.shape == (2, 16, 4, 6)
    assert tiny_ae.decode(latents).shape == (2, 3, 32, 48)


def test_encode_samples_the_posterior_and_applies_scale_and_shift(tiny_ae):
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    first = tiny_ae.encode(images, generator=torch.Generator().manual_seed(1))
    second = tiny_ae.encode(images, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(first, second), "BAGEL encodes with a posterior sample, not the mean"
    mean = tiny_ae.encoder(images).chunk(2, dim=1)[0]
    cfg = tiny_ae.config
    torch.testing.assert_close(
        tiny_ae.encode(images, sample=False), cfg.scale_factor * (mean - cfg.shift_factor)
    )


def test_decode_inverts_the_latent_affine_map(tiny_ae):
    z = torch.randn(1, 16, 2, 2)
    cfg = tiny_ae.config
    torch.testing.assert_close(tiny_ae.decode(z), tiny_ae.decoder(z / cfg.scale_factor + cfg.shift_factor))


def test_image_size_must_be_a_multiple_of_the_downsampling(tiny_ae):
    with pytest.raises(ValueError, match=r"image size \(20, 16\) is not a multiple of 8"):
        tiny_ae.encode(torch.zeros(1, 3, 20, 16))
