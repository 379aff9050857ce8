"""Helpers for the world tests: the degradation a generated image might show."""

import numpy as np
import pytest
from PIL import Image, ImageFilter


def degrade(
    image: Image.Image, rng: np.random.Generator, blur: float = 1.0, noise: float = 0.1
) -> Image.Image:
    """Gaussian blur (sigma in pixels) then Gaussian noise (sigma in [0, 1] units), clipped."""
    x = np.asarray(image.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) / 255.0
    x = np.clip(x + rng.normal(0.0, noise, x.shape), 0.0, 1.0)
    return Image.fromarray((x * 255).round().astype(np.uint8))


@pytest.fixture
def degrade_fn():
    return degrade
