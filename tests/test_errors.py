"""Every bad input a user can give gets a clear error naming the input and the fix."""

from __future__ import annotations

import json

import pytest
import torch

from rewarddance.backend import FewShotExample, RewardModel, Video
from rewarddance.backend.devices import resolve_device, resolve_dtype
from rewarddance.backend.media import MediaError, to_visuals, video_from_frames
from rewarddance.backend.scoring.config import ScoringConfig
from rewarddance.backend.vlm.base import VisualOptions
from rewarddance.backend.vlm.loading import ModelLoadError, load_vlm


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"normalize": "softmax"}, "normalize must be one of"),
        ({"cot": "yes"}, "cot must be one of"),
        ({"answer": " "}, "answer must be a non-empty word"),
        ({"max_batch_tokens": 0}, "max_batch_tokens must be a positive integer"),
        ({"reason_tokens": -1}, "reason_tokens must be a positive integer"),
        ({"question": "  "}, "question must be a non-empty template"),
    ],
)
def test_bad_scoring_options(overrides, message):
    with pytest.raises(ValueError, match=message):
        ScoringConfig().with_overrides(**overrides)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="unknown scoring option.*temprature"):
        ScoringConfig().with_overrides(temprature=0.5)  # a typo (temperature is an option since samples=k)


def test_bad_template_field_and_video_preset_on_image(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \{subject\}"):
        rm.score(photo_paths[:1], "a cat", question="Is {subject} shown?")
    with pytest.raises(ValueError, match="only applies to video"):
        rm.score(photo_paths[:1], "a cat", criteria=["motion"])


def test_answer_and_negative_sharing_first_token(reward_models, photo_paths):
    with pytest.raises(ValueError, match="share first token"):
        reward_models("qwen2_5_vl").score(photo_paths[:1], "a cat", answer="Yes", negative="Yes", normalize="yes_no")


def test_bad_prompt_arguments(reward_models, photo_paths):
    rm = reward_models("qwen2_5_vl")
    with pytest.raises(ValueError, match="got 1 prompts for 2 images"):
        rm.score(photo_paths[:2], ["only one"])
    with pytest.raises(ValueError, match="prompt must be a string"):
        rm.score(photo_paths[:1], 42)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        rm.rank(photo_paths[:2], "a cat", top_k=0)
    with pytest.raises(ValueError, match="at least 2 candidates"):
        rm.tournament(photo_paths[:1], "a cat")
    with pytest.raises(ValueError, match="exactly one reference"):
        rm.compare(photo_paths[:2], photo_paths[:2], "a cat")
    with pytest.raises(ValueError, match="needs a reference visual"):
        rm.compare(photo_paths[:1], photo_paths[1], "a cat", few_shot=[FewShotExample(photo_paths[2], True)])
    with pytest.raises(ValueError, match="must be a FewShotExample"):
        rm.score(photo_paths[:1], "a cat", few_shot=[(photo_paths[2], True)])
    with pytest.raises(ValueError, match="both be images or both be videos"):
        rm.compare([Video(torch.rand(4, 32, 32, 3), 2.0)], photo_paths[0], "a cat")


def test_bad_visual_inputs():
    with pytest.raises(MediaError, match="no images given"):
        to_visuals([])
    with pytest.raises(MediaError, match="unsupported input type"):
        to_visuals([3.5])
    with pytest.raises(MediaError, match=r"images\[0\]"):
        to_visuals(torch.rand(2, 8, 8, 7))
    with pytest.raises(MediaError, match="fps must be a positive number"):
        video_from_frames(torch.rand(4, 8, 8, 3), fps=0)
    with pytest.raises(MediaError, match="expected video frames"):
        video_from_frames(torch.rand(8, 8, 3), fps=2)
    with pytest.raises(MediaError, match="needs PyAV|not a readable video|does not exist"):
        from rewarddance.backend.media import load_video_file

        load_video_file("/nonexistent/clip.mp4")


@pytest.mark.parametrize(
    "options, message",
    [
        (VisualOptions(min_pixels=-1), "min_pixels must be a positive integer"),
        (VisualOptions(min_pixels=5000, max_pixels=100), "larger than max_pixels"),
        (VisualOptions(max_frames=0), "max_frames must be a positive integer"),
        (VisualOptions(fps=0), "fps must be a positive number"),
    ],
)
def test_bad_pixel_budgets(options, message):
    with pytest.raises(ValueError, match=message):
        options.validate()


def test_bad_model_locations(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_vlm(str(tmp_path / "missing" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_vlm(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not be fetched.*reward_models"):
        load_vlm("SomeOrg/not-downloaded-model")


def test_unsupported_model_type(tmp_path, tiny_dirs):
    import shutil

    bad = tmp_path / "llava"
    shutil.copytree(tiny_dirs["qwen2_5_vl"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "llava"
    cfg.pop("text_config", None)
    cfg.pop("vision_config", None)
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model_type 'llava'.*supported model types"):
        load_vlm(str(bad), device="cpu")


def test_bad_dtype_device_attention(tiny_dirs):
    with pytest.raises(ValueError, match="dtype 'int8' is not one of"):
        resolve_dtype("int8", "cpu")
    with pytest.raises(ValueError, match="not a torch device name"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="attention 'fast' is not one of"):
        load_vlm(str(tiny_dirs["qwen2_5_vl"]), attn_implementation="fast")
    with pytest.raises(ValueError, match="max_frames must be a positive integer"):
        RewardModel.from_pretrained(str(tiny_dirs["qwen2_5_vl"]), max_frames=0)
