"""Quantised judges in the server: a spec with quantization nf4 loads and scores; GET /v1/models gives every
configured model's memory estimate (a hub id with no cached config: unknown, and the budget counts 0)."""

from __future__ import annotations

import pytest
from helpers import ServerThread, http, png_b64, random_image

from rewarddance.backend.server.app import create_app
from rewarddance.backend.server.manager import estimate_bytes
from rewarddance.backend.server.settings import ModelSpec, ServerSettings, SettingsError


def test_nf4_spec_loads_scores_and_lists_its_estimate(tiny_dirs, tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    models = {
        "small": ModelSpec("small", str(tiny_dirs["qwen2_5_vl"]), dtype="fp32", device="cpu", quantization="nf4"),
        "hub": ModelSpec("hub", "Qwen/Qwen2.5-VL-7B-Instruct", dtype="bf16", device="cpu"),
    }
    with ServerThread(create_app(ServerSettings(models=models, default_model="small"))) as server:
        listed = {m["name"]: m for m in http("GET", server.url + "/v1/models")[1]["models"]}
        small = listed["small"]["estimate"]
        assert listed["small"]["quantization"] == "nf4" and small["quantization"] == "nf4"
        assert small["weight_bytes"] > 0 and small["source"] == "safetensors"
        assert listed["hub"]["estimate"]["weight_bytes"] is None and listed["hub"]["estimate"]["source"] == "unknown"
        status, body, _ = http(
            "POST", server.url + "/v1/score", {"prompt": "x", "images": [png_b64(random_image(48, 64))]}
        )
        assert status == 200 and 0 < body["scores"][0] < 1
        loaded = {m["name"]: m for m in http("GET", server.url + "/v1/models")[1]["models"]}["small"]
        assert loaded["loaded"] and loaded["quantization"] == "nf4"
        assert abs(loaded["memory_bytes"]["cpu"] / small["weight_bytes"] - 1) < 0.15
    assert estimate_bytes(models["hub"]) == {"gpu": 0, "cpu": 0}


def test_quantised_estimate_is_smaller_in_the_budget(tiny_dirs):
    full = ModelSpec("a", str(tiny_dirs["qwen2_5_vl"]), dtype="bf16", device="cpu")
    nf4 = ModelSpec("b", str(tiny_dirs["qwen2_5_vl"]), dtype="bf16", device="cpu", quantization="nf4")
    assert 0 < estimate_bytes(nf4)["cpu"] < estimate_bytes(full)["cpu"]


def test_bad_quantization_in_a_spec_names_the_field(tiny_dirs):
    with pytest.raises(SettingsError, match=r"models\.judge\.quantization: quantization must be one of none, int8"):
        ModelSpec("judge", str(tiny_dirs["qwen2_5_vl"]), quantization="int4").validate()
