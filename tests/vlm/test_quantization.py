"""Quantised judges (int8 / nf4 through bitsandbytes) on the tiny checkpoints: what is quantised, what is kept,
scores, gradients refused and the errors for bad values, devices and a missing bitsandbytes."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from conftest import FAMILIES

from rewarddance.backend.vlm.quantization import (
    KEEP_UNQUANTIZED,
    check_quantization,
    check_quantized_device,
    quantized_module_names,
)

pytest.importorskip("bitsandbytes")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (no ties in these scores)."""
    ra = {i: r for r, i in enumerate(sorted(range(len(a)), key=a.__getitem__))}
    rb = {i: r for r, i in enumerate(sorted(range(len(b)), key=b.__getitem__))}
    n = len(a)
    return 1 - 6 * sum((ra[i] - rb[i]) ** 2 for i in range(n)) / (n * (n * n - 1))


@pytest.fixture(scope="module")
def photos(photo_paths):
    """The sample photos as small PIL images."""
    from PIL import Image

    return [Image.open(p).convert("RGB").resize((64, 64)) for p in photo_paths]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_quantised_judge_keeps_vision_and_head_and_scores(family, quantization, tiny_dirs, reward_models, photos):
    from rewarddance.backend import RewardModel

    rm = RewardModel.from_pretrained(str(tiny_dirs[family]), dtype="fp32", device="cpu", quantization=quantization)
    names = quantized_module_names(rm.vlm.model)
    assert names and all("language_model" in n or n.startswith("model.layers") for n in names)
    assert not any(part in n.split(".") for n in names for part in KEEP_UNQUANTIZED)
    assert rm.vlm.quantization == quantization and rm.differentiable is False
    scores = rm.score(photos, "a photo").scores
    full = reward_models(family).score(photos, "a photo").scores
    assert all(math.isfinite(s) and 0 < s < 1 for s in scores)
    assert max(abs(a - b) for a, b in zip(scores, full)) < 0.05
    if quantization == "int8":  # int8 barely moves random tiny weights' scores; nf4 is noisier on them
        assert spearman(scores, full) >= 0.6


def test_quantised_judge_refuses_gradients(tiny_dirs):
    from rewarddance.backend import RewardModel

    rm = RewardModel.from_pretrained(str(tiny_dirs["qwen2_5_vl"]), dtype="fp32", device="cpu", quantization="nf4")
    images = torch.rand(1, 56, 56, 3, requires_grad=True)
    with pytest.raises(ValueError, match="quantization 'nf4'.*no reward gradients.*refl"):
        rm.reward(images, "a photo")
    assert rm.reward(images.detach(), "a photo").shape == (1,)  # scores without gradients still work


@pytest.mark.parametrize("bad", ["int4", "fp8", 4, ""])
def test_bad_quantization_names_the_choices(bad):
    with pytest.raises(ValueError, match="quantization must be one of none, int8, nf4"):
        check_quantization(bad)
    assert check_quantization(None) == "none" and check_quantization("NF4") == "nf4"


def test_unsupported_device_and_dtype_say_what_works():
    with pytest.raises(ValueError, match="CUDA GPUs and on the CPU.*not on 'mps'"):
        check_quantized_device("nf4", "mps", torch.bfloat16)
    with pytest.raises(ValueError, match="fp32 or bf16, not fp16"):
        check_quantized_device("int8", "cpu", torch.float16)
    check_quantized_device("nf4", "cpu", torch.bfloat16)


def test_missing_bitsandbytes_names_the_package(tiny_dirs, monkeypatch):
    from rewarddance.backend import RewardModel
    from rewarddance.backend.dependencies import MissingDependency

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now fails as if it were not installed
    with pytest.raises(MissingDependency, match="bitsandbytes package.*`pip install bitsandbytes`"):
        RewardModel.from_pretrained(str(tiny_dirs["qwen2_vl"]), device="cpu", quantization="int8")
