"""The flow sampler and guidance on tensors small enough to check by hand."""

import math

import pytest
import torch

from pdgen.inference.sampler import euler_sample, guidance_on, guide


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_no_guidance_is_the_conditional_velocity():
    v = t([3.0, 4.0])
    assert guide(v, None, None, 4.0, 1.0, "global", 0.0) is v


def test_text_guidance_with_global_renorm():
    # v = 0 + 2 * ([3, 4] - 0) = [6, 8]; |v_c| / |v| = 5 / 10 -> back to [3, 4].
    v_c, v_u = t([3.0, 4.0]), t([0.0, 0.0])
    torch.testing.assert_close(guide(v_c, v_u, None, 2.0, 1.0, "global", 0.0), t([3.0, 4.0]))
    # renorm_min clamps the factor from below: 0.8 * [6, 8].
    torch.testing.assert_close(guide(v_c, v_u, None, 2.0, 1.0, "global", 0.8), t([4.8, 6.4]))


def test_global_renorm_takes_one_norm_over_the_image_and_channel_renorm_one_per_token():
    v_c, v_u = t([3.0, 4.0], [1.0, 0.0]), t([3.0, 4.0], [0.0, 0.0])
    # guided: token 0 unchanged [3, 4], token 1 doubled [2, 0]
    per_token = guide(v_c, v_u, None, 2.0, 1.0, "channel", 0.0)
    torch.testing.assert_close(per_token, t([3.0, 4.0], [1.0, 0.0]))  # factors 5/5 and 1/2
    whole = guide(v_c, v_u, None, 2.0, 1.0, "global", 0.0)
    torch.testing.assert_close(whole, t([3.0, 4.0], [2.0, 0.0]) * math.sqrt(26 / 29))  # |v_c|=√26, |v|=√29


def test_image_guidance_follows_text_guidance():
    v_c, v_ut, v_ui = t([1.0, 0.0]), t([0.0, 0.0]), t([0.0, 1.0])
    # v_text = 3 * [1, 0] = [3, 0]; v = [0, 1] + 2 * ([3, 0] - [0, 1]) = [6, -1]
    unscaled = guide(v_c, v_ut, v_ui, 3.0, 2.0, "global", 1.0)  # renorm_min 1 disables renorm
    torch.testing.assert_close(unscaled, t([6.0, -1.0]))
    torch.testing.assert_close(
        guide(v_c, v_ut, v_ui, 3.0, 2.0, "global", 0.0), t([6.0, -1.0]) / math.sqrt(37)
    )


def test_text_channel_renorms_the_text_term_only():
    v_c, v_ut, v_ui = t([1.0, 0.0]), t([0.0, 0.0]), t([0.0, 1.0])
    # v_text = [3, 0] renormed per token to [1, 0]; then [0, 1] + 2 * ([1, 0] - [0, 1]) = [2, -1], as is
    torch.testing.assert_close(guide(v_c, v_ut, v_ui, 3.0, 2.0, "text_channel", 0.0), t([2.0, -1.0]))


def test_image_guidance_alone_uses_the_conditional_velocity_as_the_text_term():
    v_c, v_ui = t([1.0, 0.0]), t([0.0, 1.0])
    torch.testing.assert_close(guide(v_c, None, v_ui, 4.0, 2.0, "global", 1.0), t([2.0, -1.0]))


def test_unknown_renorm_type_is_refused():
    with pytest.raises(ValueError, match="cfg_renorm_type 'sphere'"):
        guide(t([1.0]), t([0.0]), None, 2.0, 1.0, "sphere", 0.0)


@pytest.mark.parametrize(
    ("time", "scale", "on"),
    [(1.0, 4.0, True), (0.41, 4.0, True), (0.4, 4.0, False), (0.1, 4.0, False), (0.9, 1.0, False)],
)
def test_guidance_applies_inside_the_half_open_interval_with_a_scale_above_one(time, scale, on):
    assert guidance_on(time, scale, (0.4, 1.0)) is on


@pytest.mark.parametrize(("shift", "expected"), [(1.0, -0.75), (3.0, -0.8125)])
def test_euler_integrates_from_noise_to_data_over_shifted_times(shift, expected):
    # v(x, t) = t. Times for 3 steps: shift 1 -> [1, .5, 0]: x = 0 - 1 * .5 - .5 * .5 = -.75;
    # shift 3 -> [1, .75, 0] (3 * .5 / (1 + 2 * .5)): x = -1 * .25 - .75 * .75 = -.8125.
    calls = []

    def velocity(x, time):
        calls.append(time)
        return torch.full_like(x, time)

    x0 = euler_sample(velocity, torch.zeros(2, 4, dtype=torch.float64), num_timesteps=3, shift=shift)
    torch.testing.assert_close(x0, torch.full((2, 4), expected, dtype=torch.float64))
    assert len(calls) == 2 and calls[0] == 1.0
