"""Tiny checkpoint sizes: xs and m of every family write, load and score; parameters grow xs < s < m."""

from __future__ import annotations

import json
import math

import pytest
from conftest import FAMILIES
from PIL import Image as PILImage

from rewarddance.backend.vlm.tiny import SIZES, resize_config, write_tiny_checkpoint

VISION_DEPTH_KEYS = {"qwen2_vl": "depth", "qwen2_5_vl": "depth", "qwen3_vl": "depth", "internvl": "num_hidden_layers"}


def parameter_count(checkpoint) -> int:
    """Number of weights stored in a checkpoint's model.safetensors."""
    from safetensors import safe_open

    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


@pytest.fixture(scope="module")
def sized_dirs(tmp_path_factory, tiny_dirs):
    """(family, size) -> checkpoint directory; "s" is the session's default checkpoint."""
    root = tmp_path_factory.mktemp("sizes")
    dirs = {(f, "s"): tiny_dirs[f] for f in FAMILIES}
    for f in FAMILIES:
        for size in ("xs", "m"):
            dirs[(f, size)] = write_tiny_checkpoint(f, root / f"{f}-{size}", size=size)
    return dirs


@pytest.mark.parametrize("family", FAMILIES)
def test_every_size_loads_scores_and_grows(family, sized_dirs):
    from rewarddance.backend import RewardModel

    image = PILImage.new("RGB", (56, 56), (200, 40, 40))
    counts = []
    for size in ("xs", "s", "m"):
        ckpt = sized_dirs[(family, size)]
        config = json.loads((ckpt / "config.json").read_text())
        text, vision = config["text_config"], config["vision_config"]
        assert text["num_hidden_layers"] == {"xs": 1, "s": 2, "m": 4}[size]
        assert text["intermediate_size"] == {"xs": 128, "s": 128, "m": 256}[size]
        assert vision[VISION_DEPTH_KEYS[family]] == {"xs": 1, "s": 2, "m": 4}[size]
        for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            assert all(0 <= i < vision[VISION_DEPTH_KEYS[family]] for i in vision.get(key, []))
        if "layer_types" in text:
            assert len(text["layer_types"]) == text["num_hidden_layers"]
        rm = RewardModel.from_pretrained(str(ckpt), dtype="fp32", device="cpu")
        score = rm.score(image, prompt="a red square").scores[0]
        assert 0.0 <= score <= 1.0
        counts.append(parameter_count(ckpt))
    assert counts[0] < counts[1] < counts[2], counts


def test_xs_keeps_block_indexes_inside_the_depth(sized_dirs):
    qwen25 = json.loads((sized_dirs[("qwen2_5_vl", "xs")] / "config.json").read_text())["vision_config"]
    assert qwen25["fullatt_block_indexes"] == [0]
    qwen3 = json.loads((sized_dirs[("qwen3_vl", "xs")] / "config.json").read_text())["vision_config"]
    assert qwen3["deepstack_visual_indexes"] == [0]
    qwen3_m = json.loads((sized_dirs[("qwen3_vl", "m")] / "config.json").read_text())["vision_config"]
    assert qwen3_m["deepstack_visual_indexes"] == [1]


def test_size_s_is_the_default_checkpoint(tmp_path, tiny_dirs):
    written = write_tiny_checkpoint("qwen2_5_vl", tmp_path / "s", size="s")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (written / name).read_bytes() == (tiny_dirs["qwen2_5_vl"] / name).read_bytes(), name


def test_unknown_size_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model size 'l'; choose one of xs, s, m"):
        write_tiny_checkpoint("qwen2_vl", tmp_path / "t", size="l")
    assert not (tmp_path / "t").exists()
    assert resize_config("any config", "s") == "any config"
    assert list(SIZES) == ["xs", "s", "m"]


def test_tiny_model_command_takes_a_size(tmp_path, capsys):
    from rewarddance.backend.cli import main

    assert main(["tiny-model", "--family", "qwen2_vl", "--out", str(tmp_path / "xs"), "--size", "xs"]) == 0
    config = json.loads((tmp_path / "xs" / "config.json").read_text())
    assert config["text_config"]["num_hidden_layers"] == 1 and config["vision_config"]["depth"] == 1
    with pytest.raises(SystemExit):
        main(["tiny-model", "--family", "qwen2_vl", "--out", str(tmp_path / "l"), "--size", "l"])
    assert "invalid choice: 'l'" in capsys.readouterr().err
