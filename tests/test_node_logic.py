"""The node pack's logic as plain functions: same scores as the CLI, selection, latents, videos, criteria."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import random_image

from rewarddance.backend import node_logic as nl
from rewarddance.backend.annotate import annotate_batch
from rewarddance.backend.score_text import format_score, item_name
from rewarddance.backend.selection import check_scores, select_top_k, take_latents, video_groups


def load_like_comfyui(paths) -> torch.Tensor:
    """What ComfyUI's LoadImage gives for files of one size: float32 [B, H, W, 3] = uint8 / 255."""
    from PIL import Image

    return torch.stack(
        [torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).astype(np.float32) / 255.0) for p in paths]
    )


@pytest.fixture(scope="module")
def same_size_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("node_images")
    paths = []
    for i in range(5):
        path = root / f"img{i}.png"
        random_image(96, 128, seed=40 + i).save(path)
        paths.append(path)
    return paths


def test_score_images_equals_cli_score(same_size_files, tiny_dirs, reward_models, capsys):
    from rewarddance.backend.cli import main

    rm = reward_models("qwen2_5_vl")
    scored = nl.score_images(rm, load_like_comfyui(same_size_files), "a red fox")
    assert (
        main(
            [
                "score",
                *map(str, same_size_files),
                "--prompt",
                "a red fox",
                "--json",
                "--model",
                str(tiny_dirs["qwen2_5_vl"]),
                "--dtype",
                "fp32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    cli = [row["score"] for row in json.loads(capsys.readouterr().out)]
    assert scored.scores == pytest.approx(cli, abs=1e-5)
    assert scored.preview.shape == (5, 96, 128, 3)
    best = max(range(5), key=lambda i: scored.scores[i])
    assert scored.summary.splitlines()[0] == f"#1  image {best + 1}: {format_score(scored.scores[best])}"
    assert scored.rows[best] == {"index": best, "name": f"image {best + 1}", "score": scored.scores[best], "rank": 1}


def test_fast_tensor_path_is_close_and_progress_is_reported(same_size_files, reward_models, monkeypatch):
    rm = reward_models("qwen2_5_vl")
    images = load_like_comfyui(same_size_files)
    monkeypatch.setattr(nl, "CHUNK", 2)
    seen = []
    fast = nl.score_images(rm, images, "a red fox", exact=False, progress=lambda d, t: seen.append((d, t)))
    exact = nl.score_images(rm, images, "a red fox")
    assert seen == [(2, 5), (4, 5), (5, 5)]
    assert fast.scores == pytest.approx(exact.scores, rel=0.15)  # within 1/255 of the pixels: close, not equal


def test_an_interrupt_stops_between_chunks(same_size_files, reward_models, monkeypatch):
    monkeypatch.setattr(nl, "CHUNK", 2)

    class Interrupted(Exception):
        pass

    rm = reward_models("qwen2_5_vl")
    scored: list[int] = []
    original = rm.score

    def counting_score(images, *args, **kwargs):
        scored.append(len(images))
        return original(images, *args, **kwargs)

    def stop(done, total):
        assert (done, total) == (2, 5)
        raise Interrupted

    monkeypatch.setattr(rm, "score", counting_score)
    with pytest.raises(Interrupted):
        nl.score_images(rm, load_like_comfyui(same_size_files), "x", progress=stop)
    assert scored == [2]  # the first chunk of 2 was scored, then it stopped: the other 3 images cost nothing


def test_best_of_n_keeps_the_top_k_with_their_latents(same_size_files, reward_models):
    rm = reward_models("qwen2_5_vl")
    images = load_like_comfyui(same_size_files)
    latent = {
        "samples": torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 4, 12, 16).clone(),
        "batch_index": [10, 11, 12, 13, 14],
    }
    result = nl.best_of_n(rm, images, "a red fox", top_k=2, latent=latent)
    order = sorted(range(5), key=lambda i: -result.all_scores[i])
    assert result.indices == order[:2]
    assert torch.equal(result.images, images[order[:2]])
    assert result.latent["samples"][:, 0, 0, 0].tolist() == [float(i) for i in order[:2]]
    assert result.latent["batch_index"] == [10 + i for i in order[:2]]
    assert latent["samples"].shape[0] == 5  # input untouched


def test_best_of_n_with_precomputed_scores_threshold_and_videos():
    frames = torch.rand(6, 8, 8, 3)  # three videos of two frames
    latent = {"samples": torch.randn(3, 16, 2, 4, 4)}
    r = nl.best_of_n(None, frames, "x", top_k=2, latent=latent, precomputed=[0.1, 0.7, 0.4], frames_per_video=2)
    assert r.indices == [1, 2] and r.scores == [0.7, 0.4]
    assert r.summary == "#1  video 2: 0.7\n#2  video 3: 0.4\n#3  video 1: 0.1"
    assert [(row["name"], row["rank"], row["kept"]) for row in r.rows] == [
        ("video 1", 3, False),
        ("video 2", 1, True),
        ("video 3", 2, True),
    ]
    assert torch.equal(r.images, frames[[2, 3, 4, 5]])
    assert torch.equal(r.latent["samples"], latent["samples"][[1, 2]])
    r = nl.best_of_n(None, frames, "x", top_k=3, precomputed=[0.1, 0.7, 0.4], frames_per_video=2, threshold=0.9)
    assert r.indices == [1] and r.summary.startswith("no item reached the threshold 0.9; kept the best one\n")


def test_score_videos_and_compare_match_the_engine(reward_models):
    rm = reward_models("qwen2_5_vl")
    frames = torch.stack(
        [torch.from_numpy(np.asarray(random_image(56, 56, seed=s), dtype=np.float32) / 255) for s in range(6)]
    )
    scored = nl.score_videos(rm, frames, 4.0, 3, "a dog running")
    expected = rm.score([nl.video_from_frames(frames[:3], 4.0), nl.video_from_frames(frames[3:], 4.0)], "a dog running")
    assert scored.scores == pytest.approx(expected.scores, abs=1e-6) and scored.preview.shape[0] == 2
    compared = nl.compare_to_reference(rm, frames[:3], frames[5:6], "a dog")
    expected = rm.compare([nl.exact_image(f) for f in frames[:3]], nl.exact_image(frames[5]), "a dog")
    assert compared.scores == pytest.approx(expected.scores, abs=1e-6)


def test_tournament_orders_images_by_the_engine_ranking(same_size_files, reward_models):
    rm = reward_models("qwen2_5_vl")
    images = load_like_comfyui(same_size_files[:3])
    ranked = nl.tournament(rm, images, "a red fox")
    expected = rm.tournament([nl.exact_image(r) for r in images], "a red fox")
    assert ranked.ranking == expected.ranking and ranked.wins == expected.wins
    assert torch.equal(ranked.images, images[expected.ranking])
    best = expected.ranking[0]
    first = f"#1  image {best + 1}: {expected.wins[best]} wins, mean P(beats) "
    assert ranked.summary.splitlines()[0] == first + format_score(expected.mean_win_probability[best])
    assert [row["name"] for row in ranked.rows] == ["image 1", "image 2", "image 3"]
    assert ranked.rows[best]["rank"] == 1 and ranked.rows[best]["wins"] == expected.wins[best]


def test_criteria_from_presets_text_and_examples(reward_models):
    examples = torch.rand(2, 16, 16, 3)
    c = nl.build_criteria(["alignment"], "no watermark", "answer_first", examples, "yes, no", "a fox")
    assert c.criteria == ("alignment", "no watermark") and c.cot == "answer_first"
    assert [s.verdict for s in c.few_shot] == [True, False] and c.few_shot[0].prompt == "a fox"
    assert c.overrides() == {"cot": "answer_first", "criteria": ["alignment", "no watermark"]}
    scored = nl.score_images(
        reward_models("qwen2_5_vl"),
        torch.rand(1, 32, 32, 3),
        "a fox",
        nl.build_criteria(["alignment"], examples=examples, verdicts="yes,no"),
    )
    assert len(scored.scores) == 1


@pytest.mark.parametrize(
    "kwargs,word",
    [
        (dict(presets=["beauty"]), "unknown preset"),
        (dict(presets=[], cot="sometimes"), "cot"),
        (dict(presets=[], examples=torch.rand(2, 8, 8, 3), verdicts="yes"), "1 verdicts for 2"),
        (dict(presets=[], examples=torch.rand(1, 8, 8, 3), verdicts="maybe"), "'maybe'"),
        (dict(presets=[], verdicts="yes"), "connect the example images"),
    ],
)
def test_bad_criteria(kwargs, word):
    with pytest.raises(ValueError, match=word):
        nl.build_criteria(**kwargs)


def test_selection_errors():
    with pytest.raises(ValueError, match="top_k"):
        select_top_k([0.1], 0)
    with pytest.raises(ValueError, match="frames_per_video"):
        video_groups(5, 2)
    with pytest.raises(ValueError, match="3 entries but 2 items"):
        take_latents({"samples": torch.zeros(3, 4, 2, 2)}, [0], 2)
    with pytest.raises(ValueError, match="^scores: got 2 scores for 3 items"):
        check_scores([0.1, 0.2], 3)
    with pytest.raises(ValueError, match="^scores: connect the scores output"):
        check_scores(["0.1, 0.2"], 1)  # a summary text is not scores
    with pytest.raises(ValueError, match="^scores: every score must be a finite"):
        check_scores([0.1, float("nan")], 2)
    with pytest.raises(ValueError, match="^images: got a list of 2 values"):
        nl.one_value([torch.rand(1, 8, 8, 3), torch.rand(1, 8, 8, 3)], "images")
    assert nl.one_value([], "latent") is None and nl.one_value([3], "top_k") == 3
    with pytest.raises(ValueError, match="text"):
        nl.score_images(None, torch.rand(1, 8, 8, 3), "  ")
    with pytest.raises(ValueError, match="reward_model"):
        nl.best_of_n(None, torch.rand(2, 8, 8, 3), "x")


@pytest.mark.parametrize(
    "value,text",
    [
        (0.81234, "0.8123"),
        (4.3412e-05, "4.341e-05"),
        (4.34e-05, "4.34e-05"),
        (0.5, "0.5"),
        (1.0, "1"),
        (0.0, "0"),
        (0.00012345, "0.0001234"),
        (12.3456, "12.35"),
        (-0.25, "-0.25"),
        (123456.0, "1.235e+05"),
    ],
)
def test_one_number_format(value, text):
    """Previews, summaries, badges and the web list all write numbers this way (4 significant digits)."""
    assert format_score(value) == text
    assert nl.preview_labels([value]) == [f"#1  {text}"]


def test_people_read_1_based_numbers_and_indices_stay_0_based():
    assert item_name(0) == "image 1" and item_name(2, "video") == "video 3"
    assert nl.summarize([0.2, 0.9, 4.34e-05]) == "#1  image 2: 0.9\n#2  image 1: 0.2\n#3  image 3: 4.34e-05"
    rows = nl.score_rows([0.2, 0.9], "candidate")
    assert rows == [
        {"index": 0, "name": "candidate 1", "score": 0.2, "rank": 2},
        {"index": 1, "name": "candidate 2", "score": 0.9, "rank": 1},
    ]
    assert nl.best_of_n(None, torch.rand(3, 8, 8, 3), "x", precomputed=[0.2, 0.9, 0.5]).indices == [1]  # 0-based


def test_annotate_keeps_shape_and_marks_the_corner():
    images = torch.full((2, 64, 80, 3), 0.8)
    out = annotate_batch(images, ["#1  0.9000", "#2  0.1000"])
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out[:, :4, :4].max() < 0.1  # the dark label box
    assert torch.allclose(out[:, -10:, -10:], images[:, -10:, -10:], atol=1 / 255)


def test_before_use_hook_runs_under_the_model_lock(reward_models):
    """A host (ComfyUI) hook runs before every operation, with the model held by one thread."""
    rm = reward_models("qwen2_5_vl")
    calls = []
    rm.before_use = lambda: calls.append(("load", rm._lock._is_owned()))
    rm.after_use = lambda: calls.append(("unload", rm._lock._is_owned()))
    try:
        rm.score([random_image(32, 32)], "x")
        rm.tournament([random_image(32, 32, seed=1), random_image(32, 32, seed=2)], "x")
        with rm.use():  # a node holds the model across chunks: hooks run once
            rm.score([random_image(32, 32)], "x")
            rm.score([random_image(32, 32)], "y")
    finally:
        rm.before_use = rm.after_use = None
    assert calls == [("load", True), ("unload", True)] * 3


def test_the_web_extension_formats_numbers_like_the_backend(tmp_path):
    """web/format.js (badge and ranked list) writes every number exactly as format_score does (needs node)."""
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        pytest.skip("no node.js to run web/format.js")
    rng = np.random.default_rng(0)
    values = [0.0, 1.0, 0.5, 4.34e-05, 0.8123, 1e-4, 9.9996e-05, 0.99996, 9999.6, -0.25, 123456.0]
    values += (10.0 ** rng.uniform(-9, 6, 300) * rng.choice([-1, 1], 300)).tolist() + rng.uniform(0, 1, 200).tolist()
    module = tmp_path / "format.mjs"  # .mjs: node reads it as an ES module, as the browser does
    module.write_text((Path(__file__).resolve().parents[1] / "web" / "format.js").read_text())
    script = f"import {{formatScore}} from {json.dumps(str(module))}; console.log(JSON.stringify({values}.map(formatScore)));"
    out = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [format_score(v) for v in values]
