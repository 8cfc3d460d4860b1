"""The reward functions through a running `rewarddance serve`: the same scores as the local RewardModel, JSON
bodies only (pickle is never touched), for pointwise, pairwise and the group win rate."""

import ast
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_image, start_serve

import rewarddance.backend.integrations as integrations
from rewarddance.backend.client import RewardClient
from rewarddance.integrations import reward_function, win_rate_reward

FAMILY = "qwen2_5_vl"
PROMPTS = ["a red fox in the snow"] * 4 + ["a cup of coffee"] * 4


@pytest.fixture(scope="module")
def server(tiny_dirs):
    """A `rewarddance serve` subprocess on the tiny judge: its URL."""
    proc, url = start_serve(tiny_dirs[FAMILY])
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def rm(reward_models):
    """The same tiny judge loaded locally."""
    return reward_models(FAMILY)


@pytest.fixture(scope="module")
def pils():
    """Eight small RGB images."""
    return [random_image(32, 40, seed=i) for i in range(8)]


@pytest.fixture
def no_pickle(monkeypatch):
    """Make any use of pickle fail loudly while the test runs."""

    def refuse(*args, **kwargs):
        raise AssertionError("pickle must not be used")

    for name in ("dumps", "loads", "dump", "load"):
        monkeypatch.setattr(pickle, name, refuse)


def test_server_scores_equal_reward_model_score_for_every_format(server, rm, pils, no_pickle):
    expected = np.array(rm.score(pils, PROMPTS).scores)
    arr = np.stack([np.asarray(p) for p in pils])
    fn = reward_function(server, server_model="t")
    for images in (arr, arr.transpose(0, 3, 1, 2), pils, torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255):
        scores, info = fn(images, PROMPTS, [{} for _ in PROMPTS])
        assert scores.shape == (8,) and info == {"mode": "pointwise", "calls": 1}
        np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_server_pairwise_and_win_rate_equal_local(server, rm, pils, no_pickle):
    refs = [random_image(32, 40, seed=100), random_image(32, 40, seed=101)]
    metadata = [{"reference": refs[0] if i < 4 else refs[1]} for i in range(8)]
    remote, info = reward_function(server, "pairwise")(pils, PROMPTS, metadata)
    local, _ = reward_function(rm, "pairwise")(pils, PROMPTS, metadata)
    np.testing.assert_allclose(remote, local, atol=1e-5)
    assert info["calls"] == 2  # one request per reference
    remote_wr, _ = win_rate_reward(server)(pils, PROMPTS)
    local_wr, _ = win_rate_reward(rm)(pils, PROMPTS)
    np.testing.assert_allclose(remote_wr, local_wr, atol=1e-5)


def test_requests_are_json(server, pils, monkeypatch):
    sent = []
    original = RewardClient.request

    def record(self, method, path, body=None):
        sent.append(body)
        return original(self, method, path, body)

    monkeypatch.setattr(RewardClient, "request", record)
    reward_function(server)(pils[:2], PROMPTS[:2])
    assert sent and all(isinstance(json.loads(b), dict) for b in sent)


def test_integrations_code_does_not_import_pickle():
    for path in Path(integrations.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any("pickle" in name for name in imported), path
