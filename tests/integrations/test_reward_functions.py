"""Flow-GRPO-style reward functions on a local tiny judge: every image format scores like RewardModel.score,
pairwise against references, batching, the Pref-GRPO win rate, and bad inputs named in the error."""

import numpy as np
import pytest
import torch
from helpers import random_image

from rewarddance.backend.media import MediaError
from rewarddance.integrations import reward_function, symmetric_win_rates, win_rate_reward

FAMILY = "qwen2_5_vl"
PROMPTS = ["a red fox in the snow"] * 4 + ["a cup of coffee"] * 4


@pytest.fixture(scope="module")
def rm(reward_models):
    """The tiny judge (loaded once for the module)."""
    return reward_models(FAMILY)


@pytest.fixture(scope="module")
def pils():
    """Eight small RGB images."""
    return [random_image(32, 40, seed=i) for i in range(8)]


@pytest.fixture(scope="module")
def expected(rm, pils):
    """RewardModel.score of the eight images with their prompts."""
    return np.array(rm.score(pils, PROMPTS).scores)


def formats(pils):
    """The same eight images in every layout a trainer may hand over."""
    arr = np.stack([np.asarray(p) for p in pils])
    unit = torch.from_numpy(arr).float() / 255.0
    return {
        "uint8 NHWC": arr,
        "uint8 NCHW": np.ascontiguousarray(arr.transpose(0, 3, 1, 2)),
        "PIL list": list(pils),
        "float NCHW": unit.permute(0, 3, 1, 2),
        "float NHWC": unit,
        "uint8 tensor": torch.from_numpy(arr),
    }


@pytest.mark.parametrize("fmt", ["uint8 NHWC", "uint8 NCHW", "PIL list", "float NCHW", "float NHWC", "uint8 tensor"])
def test_pointwise_scores_equal_reward_model_score_for_every_format(rm, pils, expected, fmt):
    scores, info = reward_function(rm)(formats(pils)[fmt], PROMPTS, [{} for _ in PROMPTS])
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float32 and scores.shape == (8,)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert info == {"mode": "pointwise", "calls": 1}


def test_a_judge_preset_passes_through_as_a_scoring_option(rm, pils):
    """`judge=` names the judge preset (the model is the first argument), as in RewardModel.score."""
    scores, _ = reward_function(rm, judge="unifiedreward")(pils, PROMPTS)
    np.testing.assert_allclose(scores, rm.score(pils, PROMPTS, judge="unifiedreward").scores, atol=1e-6)
    assert not np.allclose(scores, rm.score(pils, PROMPTS).scores, atol=1e-4)


class CountingJudge:
    """A RewardModel wrapper counting score / compare calls (duck-typed like a RewardClient)."""

    def __init__(self, rm):
        self.rm, self.calls = rm, []

    def score(self, images, prompt, **options):
        self.calls.append(len(images))
        return self.rm.score(images, prompt, **options)

    def compare(self, candidates, reference, prompt, **options):
        self.calls.append(len(candidates))
        return self.rm.compare(candidates, reference, prompt, **options)

    def tournament(self, candidates, prompt, **options):
        return self.rm.tournament(candidates, prompt, **options)


def test_one_engine_call_per_batch_of_batch_size(rm, pils, expected):
    judge = CountingJudge(rm)
    scores, info = reward_function(judge, batch_size=3)(pils, PROMPTS, None)
    assert judge.calls == [3, 3, 2] and info["calls"] == 3
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_scoring_options_reach_the_model(rm, pils):
    scores, _ = reward_function(rm, criteria="aesthetics")(pils[:2], PROMPTS[:2])
    np.testing.assert_allclose(scores, rm.score(pils[:2], PROMPTS[:2], criteria="aesthetics").scores, atol=1e-5)


def test_pairwise_per_image_references_from_metadata_in_one_call(rm, pils):
    refs = [random_image(32, 40, seed=100), random_image(32, 40, seed=101)]
    metadata = [{"reference": refs[0] if i < 4 else refs[1]} for i in range(8)]
    scores, info = reward_function(rm, "pairwise")(pils, PROMPTS, metadata)
    want = rm.compare(pils[:4], refs[0], PROMPTS[0]).scores + rm.compare(pils[4:], refs[1], PROMPTS[4]).scores
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert info == {"mode": "pairwise", "calls": 1}


def test_pairwise_reference_per_prompt(rm, pils, tmp_path):
    paths = {}
    for k, prompt in enumerate(dict.fromkeys(PROMPTS)):
        paths[prompt] = str(tmp_path / f"ref{k}.png")
        random_image(32, 40, seed=200 + k).save(paths[prompt])
    fn = reward_function(rm, "pairwise", references=paths)
    scores, _ = fn(pils, PROMPTS, [{"task": "x"}] * 8)
    want = rm.compare(pils[:4], paths[PROMPTS[0]], PROMPTS[0]).scores
    want += rm.compare(pils[4:], paths[PROMPTS[4]], PROMPTS[4]).scores
    np.testing.assert_allclose(scores, want, atol=1e-5)


def test_rewards_tensor_for_dancegrpo_loops(rm, pils, expected):
    out = reward_function(rm).rewards(pils[:3], PROMPTS[:3])
    assert out.dtype == torch.float32 and out.shape == (3,)
    np.testing.assert_allclose(out.numpy(), expected[:3], atol=1e-5)


def reference_win_rates(rm, images, prompt):
    """Each image's mean win probability in its group from RewardModel.compare (each image as the reference of
    the others), both orders of every pair averaged; and its fraction of wins."""
    n = len(images)
    p = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        row = dict(zip(others, rm.compare([images[j] for j in others], images[i], prompt).scores))
        p.append([row.get(j, 0.5) for j in range(n)])
    soft = [sum(0.5 * (p[i][j] + 1 - p[j][i]) for i in range(n) if i != j) / (n - 1) for j in range(n)]
    hard = [
        sum(1.0 if 0.5 * (p[i][j] + 1 - p[j][i]) > 0.5 else 0.0 for i in range(n) if i != j) / (n - 1) for j in range(n)
    ]
    return soft, hard


def test_win_rate_equals_reference_from_pairwise_scores(rm, pils):
    scores, info = win_rate_reward(rm)(pils, PROMPTS, None)
    assert info["groups"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    soft_a, hard_a = reference_win_rates(rm, pils[:4], PROMPTS[0])
    soft_b, hard_b = reference_win_rates(rm, pils[4:], PROMPTS[4])
    np.testing.assert_allclose(scores, soft_a + soft_b, atol=1e-5)
    np.testing.assert_allclose(info["win_fraction"], hard_a + hard_b, atol=1e-6)
    assert abs(scores[:4].mean() - 0.5) < 1e-6 and abs(scores[4:].mean() - 0.5) < 1e-6


def test_win_rate_lone_image_scores_half(rm, pils):
    scores, info = win_rate_reward(rm, hard=True)(pils[:3], ["a", "a", "b"])
    assert scores[2] == 0.5 and info["groups"] == [[0, 1], [2]]
    np.testing.assert_array_equal(scores, info["win_fraction"])
    assert sorted(scores[:2].tolist()) in ([0.0, 1.0], [0.5, 0.5])


def test_symmetric_win_rates_of_a_known_matrix():
    matrix = [[0.5, 0.9, 0.2], [0.3, 0.5, 0.6], [0.8, 0.4, 0.5]]  # matrix[i][j] = P(j beats reference i)
    soft, hard = symmetric_win_rates(matrix)
    p01, p02, p12 = 0.5 * (0.9 + 1 - 0.3), 0.5 * (0.2 + 1 - 0.8), 0.5 * (0.6 + 1 - 0.4)  # p_ij: j over i
    np.testing.assert_allclose(soft, [((1 - p01) + (1 - p02)) / 2, (p01 + (1 - p12)) / 2, (p02 + p12) / 2], atol=1e-6)
    np.testing.assert_allclose(hard, [0.5, 0.5, 0.5], atol=1e-6)
    assert abs(sum(soft) - 1.5) < 1e-6  # a group's mean win probabilities average 0.5


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((8, 32, 40), np.uint8), r"images: expected a batch \[B, H, W, 3\] or \[B, 3, H, W\]"),
        (np.zeros((8, 32, 40, 4), np.uint8), r"got shape \(8, 32, 40, 4\)"),
        (np.zeros((8, 32, 40, 3), np.int64), "images: expected uint8 .* got dtype torch.int64"),
        (torch.full((8, 3, 32, 40), 2.0), r"images: float images must be in \[0, 1\]"),
        (torch.full((8, 3, 32, 40), float("nan")), "images: contains NaN"),
        (np.zeros((0, 32, 40, 3), np.uint8), "images: no images given"),
        ([random_image(8, 8), 3], r"images\[1\]: expected a PIL image"),
        ("picture.png", "images: expected a uint8/float array"),
    ],
)
def test_bad_images_name_the_input(rm, images, match):
    with pytest.raises(MediaError, match=match):
        reward_function(rm)(images, "p" if isinstance(images, str) else ["p"] * len(images))


def test_prompt_count_must_match_images(rm, pils):
    with pytest.raises(ValueError, match="prompts: got 3 prompts for 8 images; pass one prompt per image"):
        reward_function(rm)(pils, ["a", "b", "c"])
    with pytest.raises(ValueError, match="prompts: expected a list of strings"):
        reward_function(rm)(pils, [1] * 8)


def test_bad_metadata_and_missing_references(rm, pils):
    fn = reward_function(rm, "pairwise")
    with pytest.raises(ValueError, match="metadata: got 2 entries for 8 images"):
        fn(pils, PROMPTS, [{}, {}])
    with pytest.raises(ValueError, match=r"metadata\[0\]: no 'reference' for prompt 'a red fox in the snow'"):
        fn(pils, PROMPTS, [{}] * 8)
    with pytest.raises(ValueError, match=r"metadata\[1\]: expected a dict"):
        fn(pils[:2], PROMPTS[:2], [{}, "x"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "listwise"}, "mode: expected one of pointwise, pairwise"),
        ({"batch_size": 0}, "batch_size: expected a positive integer"),
        ({"references": ["a.png"]}, "references: expected a dict"),
        ({"criteria": 3}, "criteria"),
        ({"dtype": "fp32"}, "dtype: loading options apply only when model is a path"),
    ],
)
def test_bad_options_are_refused_before_scoring(rm, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        reward_function(rm, **kwargs)


def test_unknown_scoring_option_is_named(rm):
    with pytest.raises(TypeError, match="unknown scoring option.*colour"):
        win_rate_reward(rm, colour="red")


@pytest.mark.parametrize(
    "url, match",
    [
        ("ftp://127.0.0.1:8765", "model: unsupported URL scheme 'ftp'"),
        ("http://:8765", "model: 'http://:8765' names no host"),
        ("http://127.0.0.1:port", "model: the port of 'http://127.0.0.1:port' is not a number"),
    ],
)
def test_bad_urls_are_named(url, match):
    with pytest.raises(ValueError, match=match):
        reward_function(url)


def test_judge_of_the_wrong_type():
    with pytest.raises(ValueError, match="model: expected a RewardModel, a RewardClient"):
        reward_function(42)


def test_pairwise_array_reference_and_options_reach_compare(rm, pils):
    ref = np.asarray(random_image(32, 40, seed=7))  # read-only, as NumPy gives it
    judge = CountingJudge(rm)
    metadata = [{"reference": np.ascontiguousarray(ref.transpose(2, 0, 1))}] * 2
    scores, info = reward_function(judge, "pairwise", criteria="aesthetics")(pils[:2], PROMPTS[:2], metadata)
    want = rm.compare(pils[:2], torch.from_numpy(ref.copy()).float() / 255, PROMPTS[0], criteria="aesthetics").scores
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert judge.calls == [2] and info["calls"] == 1


def test_bad_reference_is_named(rm, pils):
    with pytest.raises(MediaError, match=r"metadata\[0\].reference: expected a PIL image, a file path"):
        reward_function(rm, "pairwise")(pils[:2], PROMPTS[:2], {"reference": 5})


def test_docs_snippet_runs(tiny_dirs, capsys):
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "integrations.md").read_text()
    snippet = re.findall(r"^```python\n(.*?)^```", doc, re.S | re.M)[1]
    exec(snippet.replace("/tmp/tiny-judge", str(tiny_dirs[FAMILY])), {})
    assert "'mode': 'pointwise', 'calls': 1" in capsys.readouterr().out
