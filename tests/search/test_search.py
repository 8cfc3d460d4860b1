"""Noise search over the generator protocol: every algorithm beats the first sample, budgets, determinism,
and N = 1 without re-noising is plain sampling bit for bit."""

from __future__ import annotations

import pytest
import torch

from rewarddance.backend.generators.protocol import Generator, seeded_noise
from rewarddance.backend.generators.sampling import sample
from rewarddance.backend.generators.tiny_flow import TinyFlowGenerator, train_tiny_flow
from rewarddance.backend.rewards import ColourReward, Ensemble, ModelReward, RemoteReward, Reward, Transformed
from rewarddance.backend.search.algorithms import ALGORITHMS, best_of_n, search_over_paths

STEPS, BUDGET = 8, 128


@pytest.fixture(scope="module")
def generator():
    return train_tiny_flow(steps=150)


def first_sample_score(gen, reward, seed):
    return float(reward(gen.decode(sample(gen, seeded_noise(gen, 1, seed), STEPS)))[0])


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_algorithm_beats_the_first_sample_within_budget(generator, name):
    reward = ColourReward(channel=0)
    gains = []
    for seed in range(3):
        result = ALGORITHMS[name](generator, reward, STEPS, BUDGET, seed=seed)
        assert result.denoiser_calls <= BUDGET and result.scorer_calls >= 1
        assert result.score == pytest.approx(float(reward(result.image)[0]), abs=1e-5)
        assert result.score == max(c.score for c in result.history)
        assert result.latent.shape == (1, *generator.noise_shape) and result.noise.shape == result.latent.shape
        gains.append(result.score - first_sample_score(generator, reward, seed))
    # min: the first sample may be the best, sampled alone there and in a batch here (float noise of ~1e-7)
    assert sum(gains) / len(gains) > 0.02 and min(gains) >= -1e-6


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_same_seed_same_result(generator, name):
    a = ALGORITHMS[name](generator, ColourReward(2), STEPS, 64, seed=5)
    b = ALGORITHMS[name](generator, ColourReward(2), STEPS, 64, seed=5)
    assert torch.equal(a.latent, b.latent) and a.score == b.score
    assert [c.score for c in a.history] == [c.score for c in b.history]


def test_n_equal_one_without_renoising_is_plain_sampling(generator):
    plain = sample(generator, seeded_noise(generator, 1, 11), STEPS)
    assert torch.equal(best_of_n(generator, ColourReward(), STEPS, STEPS, seed=11).latent, plain)
    paths = search_over_paths(generator, ColourReward(), STEPS, STEPS, seed=11, paths=1, children=1, branch_steps=())
    assert torch.equal(paths.latent, plain) and torch.equal(paths.noise, seeded_noise(generator, 1, 11))


def test_the_returned_noise_reproduces_the_latent(generator):
    for name in ("best_of_n", "random_search", "zero_order"):
        result = ALGORITHMS[name](generator, ColourReward(1), STEPS, 64, seed=2)
        assert torch.allclose(sample(generator, result.noise, STEPS), result.latent, atol=1e-6)


def test_protocol_and_errors(generator, reward_models):
    assert isinstance(generator, Generator)
    with pytest.raises(ValueError, match="budget"):
        best_of_n(generator, ColourReward(), STEPS, 0)
    with pytest.raises(ValueError, match="differentiable"):
        ALGORITHMS["noise_gradient"](
            generator, ModelReward(None, "x", reference="ref", differentiable=False), STEPS, 16
        )
    with pytest.raises(ValueError, match="steps"):
        TinyFlowGenerator().sigmas(0)


def test_reward_model_and_ensemble_rewards(generator, reward_models):
    """A VLM reward (pointwise, differentiable) and a weighted ensemble drive the same algorithms."""
    rm = reward_models("qwen2_5_vl")
    reward = Ensemble([ModelReward(rm, "a red image"), ColourReward(0)], [10.0, 1.0])
    result = best_of_n(generator, reward, 4, 16, seed=0)
    images = generator.decode(result.latent)
    expected = 10.0 * rm.score(images, "a red image").scores[0] + float(ColourReward(0)(images)[0])
    assert result.score == pytest.approx(expected, abs=1e-4)
    pixels = generator.decode(sample(generator, seeded_noise(generator, 1, 0), 2)).detach().requires_grad_(True)
    ModelReward(rm, "a red image")(pixels).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_stopping_returns_the_best_so_far(generator, name):
    asked = {"n": 0}

    def stop() -> bool:
        asked["n"] += 1
        return True

    full = ALGORITHMS[name](generator, ColourReward(), STEPS, BUDGET, seed=1)
    early = ALGORITHMS[name](generator, ColourReward(), STEPS, BUDGET, seed=1, should_stop=stop)
    assert asked["n"] >= 1 and early.denoiser_calls < full.denoiser_calls or name == "search_over_paths"
    assert early.score == max(c.score for c in early.history) and early.latent.shape == full.latent.shape
    assert early.stopped == (early.denoiser_calls < full.denoiser_calls) and not full.stopped


def test_seeded_noise_is_the_cpu_gaussian_of_the_seed(generator):
    """One seeded-noise function for search and RL: CPU randn of the seed, the same on every device."""
    expected = torch.randn((3, *generator.noise_shape), generator=torch.Generator().manual_seed(5))
    assert torch.equal(seeded_noise(generator, 3, 5).cpu(), expected)
    assert not torch.equal(seeded_noise(generator, 1, 6), seeded_noise(generator, 1, 5))


def test_every_reward_submits_through_the_protocol():
    """Local rewards inherit Reward.submit (scored at once, no graph, float32 on the CPU); a remote reward scores
    on a background thread; a reward of rewards is differentiable only when all its parts are."""
    import threading

    images = torch.rand(2, 8, 8, 3, dtype=torch.float64, requires_grad=True)
    for reward in (ColourReward(0), Transformed(ColourReward(1), "none"), Ensemble([ColourReward(0), ColourReward(2)])):
        future = reward.submit(images)
        assert Reward in type(reward).__mro__ and future.done()
        got = future.result()
        assert got.dtype == torch.float32 and got.device.type == "cpu" and not got.requires_grad
        assert torch.allclose(got, reward(images).detach().float())

    class Client:
        def __init__(self):
            self.threads = []

        def score(self, visuals, prompt):
            self.threads.append(threading.current_thread().name)
            return type("Result", (), {"scores": [float(v.mean()) for v in visuals]})()

    client = Client()
    remote = RemoteReward(client, "a red picture")
    assert torch.allclose(remote.submit(images).result(), images.detach().float().mean(dim=(1, 2, 3)), atol=1e-6)
    assert client.threads[0].startswith("rewarddance-remote-reward")
    assert not remote.differentiable and not Ensemble([remote, ColourReward()]).differentiable
    assert Transformed(ColourReward()).differentiable and not Transformed(remote).differentiable


def test_the_old_rewards_import_path_still_works_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("rewarddance.backend.search.rewards", None)
    with pytest.warns(DeprecationWarning, match="import from rewarddance.backend.rewards"):
        old = importlib.import_module("rewarddance.backend.search.rewards")
    from rewarddance.backend.rewards import ModelReward

    assert old.ModelReward is ModelReward
