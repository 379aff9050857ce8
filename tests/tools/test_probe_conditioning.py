"""tools/probe_conditioning.py: the perfect reader its ceiling is measured against."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from pdgen.models.bagel.flow import add_noise

TOOL = Path(__file__).parents[2] / "tools" / "probe_conditioning.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("probe_conditioning", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize("t", [1.0, 0.7, 0.2])
def test_a_perfect_reader_knowing_the_one_image_predicts_the_true_velocity(probe, t):
    x0, noise = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    x_t = add_noise(x0, noise, torch.full((6,), t))
    torch.testing.assert_close(probe.perfect_velocity(x_t, t, x0[None]), noise - x0)


def test_at_pure_noise_a_perfect_reader_predicts_the_mean_image(probe):
    pool = torch.randn(5, 6, 4, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(6, 4)
    torch.testing.assert_close(probe.perfect_velocity(noise, 1.0, pool), noise - pool.mean(0))


def test_near_the_end_the_posterior_picks_the_image_x_t_came_from(probe):
    pool = torch.randn(5, 6, 4, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(6, 4)
    x_t = add_noise(pool[3], noise, torch.full((6,), 0.05))
    torch.testing.assert_close(probe.perfect_velocity(x_t, 0.05, pool), noise - pool[3], atol=1e-4, rtol=0)
