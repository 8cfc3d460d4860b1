"""The memory estimate read before loading: weight bytes within 15% of what the loaded model holds (every family,
tiny sizes s and m, none / int8 / nf4), from safetensors headers and from config.json alone; activations by the
documented formula; hub ids not in the cache are unknown, never 0."""

from __future__ import annotations

import json

import pytest
from conftest import FAMILIES

from rewarddance.backend.memory_estimate import (
    activation_bytes,
    config_counts,
    estimate_from_config,
    estimate_memory,
    format_bytes,
    measured_weight_bytes,
    visual_tokens,
    weight_bytes,
)
from rewarddance.backend.vlm.tiny import write_tiny_checkpoint

MODES = ["none", "int8", "nf4"]


@pytest.fixture(scope="module")
def sized(tmp_path_factory, tiny_dirs):
    """(family, size) -> checkpoint: the session's "s" checkpoints and "m" ones written here."""
    root = tmp_path_factory.mktemp("estimate")
    dirs = {(f, "s"): tiny_dirs[f] for f in FAMILIES}
    dirs.update({(f, "m"): write_tiny_checkpoint(f, root / f, size="m") for f in FAMILIES})
    return dirs


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", ["s", "m"])
def test_weight_estimate_within_15_percent_of_loaded(family, size, sized):
    from rewarddance.backend.vlm.loading import load_vlm

    path = sized[(family, size)]
    config = json.loads((path / "config.json").read_text())
    for quantization in MODES if _has_bnb() else ["none"]:
        vlm = load_vlm(str(path), dtype="bf16", device="cpu", quantization=quantization)
        measured = measured_weight_bytes(vlm.model)
        from_files = estimate_memory(str(path), "bf16", quantization).weight_bytes
        from_config = estimate_from_config(config, "bf16", quantization, 10_000, 100).weight_bytes
        assert abs(from_files / measured - 1) < 0.15, (quantization, from_files, measured)
        assert abs(from_config / measured - 1) < 0.15, (quantization, from_config, measured)


def test_quantisation_shrinks_the_estimate(tiny_dirs):
    est = {q: estimate_memory(str(tiny_dirs["qwen2_5_vl"]), "bf16", q) for q in MODES}
    assert est["nf4"].weight_bytes < est["int8"].weight_bytes < est["none"].weight_bytes
    assert est["none"].source == "safetensors" and est["none"].parameters > 0
    fp32 = estimate_memory(str(tiny_dirs["qwen2_5_vl"]), "fp32", "none")
    assert fp32.weight_bytes == 2 * est["none"].weight_bytes


def test_weight_bytes_formula():
    from rewarddance.backend.memory_estimate import WeightCounts

    counts = WeightCounts(quantized=6400, quantized_rows=80, other=1000, source="config")
    assert weight_bytes(counts, "bf16", "none") == 2 * 7400
    assert weight_bytes(counts, "bf16", "int8") == 2000 + 6400 + 80 * 4
    assert weight_bytes(counts, "bf16", "nf4") == 2000 + 3200 + 400  # 4 bits + one fp32 absmax per 64


def test_real_judge_shape_from_config():
    """Qwen2.5-VL-7B's published sizes give its ~8.3B parameters (16.6 GB in bf16)."""
    config = {
        "model_type": "qwen2_5_vl",
        "tie_word_embeddings": False,
        "text_config": dict(
            hidden_size=3584,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            intermediate_size=18944,
            vocab_size=152064,
        ),
        "vision_config": dict(
            depth=32, hidden_size=1280, intermediate_size=3420, hidden_act="silu", patch_size=14, out_hidden_size=3584
        ),
    }
    assert 8.2e9 < config_counts(config).total < 8.4e9
    est = estimate_from_config(config, "bf16", "none", 28 * 28 * 1280, 16384)
    assert 16.4e9 < est.weight_bytes < 16.8e9
    assert visual_tokens(config, 28 * 28 * 1280) == 1280
    kv = 2 * 28 * 4 * 128 * 16384 * 2
    text = 16384 * (4 * 3584 + 2 * 18944) * 2
    vision = 1280 * 4 * (4 * 1280 + 2 * 3420) * 2
    assert activation_bytes(config, "bf16", 28 * 28 * 1280, 16384) == kv + text + vision


def test_hub_id_without_cached_config_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    est = estimate_memory("Qwen/Qwen2.5-VL-7B-Instruct", "bf16", "nf4")
    assert est.weight_bytes is None and est.total_bytes is None and est.source == "unknown"
    assert format_bytes(est.weight_bytes) == "unknown" and format_bytes(16_600_000_000) == "16.6 GB"


def test_hub_id_in_the_cache_reads_its_config(tmp_path, monkeypatch, tiny_dirs):
    import huggingface_hub.constants as constants

    snapshot = tmp_path / "models--acme--judge" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((tiny_dirs["qwen3_vl"] / "config.json").read_text())
    (tmp_path / "models--acme--judge" / "refs").mkdir()
    (tmp_path / "models--acme--judge" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    est = estimate_memory("acme/judge", "bf16", "none")
    assert est.source == "config" and est.weight_bytes > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quantization": "int4"}, "quantization must be one of none, int8, nf4"),
        ({"dtype": "fp64"}, "dtype 'fp64' is not one of"),
        ({"max_pixels": 0}, "max_pixels must be a positive"),
        ({"batch_tokens": -1}, "batch_tokens must be a positive"),
    ],
)
def test_bad_estimate_input(kwargs, message, tiny_dirs):
    with pytest.raises(ValueError, match=message):
        estimate_memory(str(tiny_dirs["qwen2_vl"]), **kwargs)


def _has_bnb() -> bool:
    """bitsandbytes is installed (the quantised rows are then measured too)."""
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None
