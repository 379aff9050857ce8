import math

import pytest
import torch
from bagel_testkit import TWO_TRAJECTORIES

from pdgen.models.bagel.flow import (
    add_noise,
    inference_timesteps,
    sample_timesteps,
    shift_timesteps,
    velocity_target,
)


def test_shift_formula_keeps_endpoints_and_pushes_toward_noise():
    t = torch.tensor([0.0, 0.5, 1.0])
    assert torch.equal(shift_timesteps(t, 1.0), t)
    torch.testing.assert_close(shift_timesteps(t, 3.0), torch.tensor([0.0, 0.75, 1.0]))


def test_one_time_per_noised_split_and_zero_for_clean_tokens(packer):
    pack = packer.collate([packer.sample(t) for t in TWO_TRAJECTORIES])
    noised = torch.isnan(pack.packed_timesteps)  # the packer marks what the sampler must fill
    times = sample_timesteps(pack, shift=3.0, generator=torch.Generator().manual_seed(0))
    assert times.shape == pack.packed_vae_token_indexes.shape
    assert torch.equal(times == 0, ~noised)
    per_image = [grid[0] * grid[1] for grid in pack.vae_latent_shapes]
    draws = [chunk for chunk in times.split(per_image) if chunk[0] > 0]
    assert len(draws) == pack.split_modes.count("noise") == 2
    for chunk in draws:
        assert (chunk == chunk[0]).all() and 0 < chunk[0] < 1
    assert not math.isclose(draws[0][0], draws[1][0])


def test_uniform_times_are_the_generator_s_uniform_draws_shifted(packer):
    pack = packer.collate([packer.sample(t) for t in TWO_TRAJECTORIES])
    times = sample_timesteps(pack, 3.0, torch.Generator().manual_seed(0), distribution="uniform")
    per_image = [grid[0] * grid[1] for grid in pack.vae_latent_shapes]
    drawn = torch.stack([chunk[0] for chunk in times.split(per_image) if chunk[0] > 0])
    expected = shift_timesteps(torch.rand(2, generator=torch.Generator().manual_seed(0)), 3.0)
    torch.testing.assert_close(drawn, expected)
    with pytest.raises(ValueError, match="'beta'"):
        sample_timesteps(pack, distribution="beta")


def test_noising_and_target_follow_the_data_to_noise_direction():
    x0, eps = torch.randn(3, 64), torch.randn(3, 64)
    t = torch.tensor([0.0, 0.25, 1.0])
    x_t = add_noise(x0, eps, t)
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[2], eps[2])
    # One exact Euler step back along the target recovers the data: x0 = x_t - t * v.
    torch.testing.assert_close(x_t - t[:, None] * velocity_target(x0, eps), x0)


def test_inference_schedule_runs_from_noise_to_data():
    times = inference_timesteps(5, shift=3.0)
    assert times[0] == 1 and times[-1] == 0 and (times[:-1] > times[1:]).all()
