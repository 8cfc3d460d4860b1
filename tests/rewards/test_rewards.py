"""Gold-judge statistics, worst-case ensembles and Pref-GRPO's group win rate, against reference computations."""

from __future__ import annotations

import pytest
import torch

from rewarddance.backend.rewards import Ensemble, GroupWinRate, ImageStatistic, Reward
from rewarddance.backend.rewards.statistics import blown_out, centre_brightness, symmetry, warm_natural, warmth


def flat(r: float, g: float, b: float, size: int = 8) -> torch.Tensor:
    """One flat-colour image [1, size, size, 3]."""
    return torch.tensor([r, g, b]).expand(1, size, size, 3).clone()


def test_warmth_is_half_the_red_minus_blue_gap_around_one_half():
    images = torch.cat([flat(1, 0, 0), flat(0, 0, 1), flat(0.5, 0.5, 0.5), flat(0.8, 0.3, 0.2)])
    assert warmth(images).tolist() == pytest.approx([1.0, 0.0, 0.5, 0.8])


def test_centre_brightness_compares_the_central_square_with_the_border():
    image = torch.zeros(1, 8, 8, 3)
    image[:, 2:6, 2:6] = 1.0  # a white central half-size square on black
    assert centre_brightness(image).item() == pytest.approx(1.0)
    assert centre_brightness(1 - image).item() == pytest.approx(0.0)
    assert centre_brightness(flat(0.3, 0.6, 0.9)).item() == pytest.approx(0.5)
    video = torch.stack([image[0], (1 - image)[0]])[None]  # [1, T=2, H, W, 3]: one bright, one dark centre
    assert centre_brightness(video).item() == pytest.approx(0.5)


def test_symmetry_is_one_for_a_mirror_image_and_drops_with_the_difference():
    left = torch.rand(1, 6, 3, 3, generator=torch.Generator().manual_seed(0))
    mirrored = torch.cat([left, left.flip(2)], dim=2)
    assert symmetry(mirrored).item() == pytest.approx(1.0)
    half = torch.zeros(1, 4, 4, 3)
    half[:, :, :2] = 1.0  # white left half, black right half: every pixel differs by 1 from its mirror
    assert symmetry(half).item() == pytest.approx(0.0)


def test_warm_natural_penalises_blown_out_colour():
    assert blown_out(flat(0.5, 0.5, 0.5)).item() == 0.0
    assert blown_out(flat(1, 0.5, 0)).item() == pytest.approx(2 / 3)  # red at 1, blue at 0, green in the middle
    assert blown_out(flat(1, 0, 0)).item() == pytest.approx(1.0)
    assert blown_out(flat(0.975, 0.5, 0.5)).item() == pytest.approx(0.5 / 3, abs=1e-6)  # halfway into the last 5%
    assert warm_natural(flat(1, 0.5, 0)).item() == pytest.approx(1.0 - (2 / 3) / 2)
    assert warm_natural(flat(0.9, 0.5, 0.1)).item() == pytest.approx(0.9)  # warm, nothing blown out
    assert warm_natural(flat(0.9, 0.5, 0.1)) > warm_natural(flat(1, 0.5, 0))  # the taste prefers the natural one


def test_image_statistic_is_differentiable_and_refuses_unknown_names():
    images = torch.rand(2, 8, 8, 3, requires_grad=True)
    ImageStatistic("warmth")(images).sum().backward()
    assert images.grad[..., 0].mean() > 0 > images.grad[..., 2].mean()
    with pytest.raises(ValueError, match="statistic must be one of warmth, centre_brightness, symmetry"):
        ImageStatistic("beauty")


class Fixed(Reward):
    def __init__(self, values: list[float]):
        self.values, self.differentiable = torch.tensor(values), True

    def __call__(self, images):
        return self.values


def test_worst_case_ensemble_takes_the_minimum_and_refuses_weights():
    a, b = Fixed([0.9, 0.2, 0.5]), Fixed([0.4, 0.7, 0.5])
    images = torch.zeros(3, 4, 4, 3)
    assert Ensemble([a, b], combine="min")(images).tolist() == pytest.approx([0.4, 0.2, 0.5])
    assert Ensemble([a, b], [0.5, 0.5])(images).tolist() == pytest.approx([0.65, 0.45, 0.5])
    with pytest.raises(ValueError, match="worst-case ensemble"):
        Ensemble([a, b], [0.5, 0.5], combine="min")
    with pytest.raises(ValueError, match="reward combine must be one of sum, min"):
        Ensemble([a, b], combine="max")


def test_group_win_rate_is_each_images_mean_win_probability_both_orders_averaged(reward_models):
    rm = reward_models("qwen2_5_vl")
    images = torch.rand(3, 28, 28, 3, generator=torch.Generator().manual_seed(1))
    rates = GroupWinRate(rm, "a red fox")(images)

    def beats(j: int, i: int) -> float:
        """P(image j beats image i) with j as the candidate."""
        return rm.compare(images[j : j + 1], images[i : i + 1], "a red fox").scores[0]

    direct = [sum(0.5 * (beats(j, i) + 1 - beats(i, j)) for i in range(3) if i != j) / 2 for j in range(3)]
    assert rates.tolist() == pytest.approx(direct, abs=1e-5)
    assert sum(rates.tolist()) == pytest.approx(1.5, abs=1e-5)  # a group's win rates average 0.5
    assert GroupWinRate(rm, "a red fox")(images[:1]).tolist() == [0.5]
    assert GroupWinRate(rm, "a red fox").differentiable is False
