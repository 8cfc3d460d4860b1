"""`rewarddance models` (memory estimates before loading) and the --quantize flag of the commands that load a judge."""

from __future__ import annotations

import json

import pytest

from rewarddance.backend.cli import main


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_lists_every_quantization(tiny_dirs, capsys, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    code, out, _ = run(["models", tiny_dirs["qwen2_5_vl"], "Qwen/Qwen2.5-VL-7B-Instruct", "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["quantization"] for r in rows] == ["none", "int8", "nf4"] * 2
    local = rows[:3]
    assert local[0]["weight_bytes"] > local[1]["weight_bytes"] > local[2]["weight_bytes"] > 0
    assert all(r["source"] == "safetensors" and r["dtype"] == "bf16" for r in local)
    assert all(r["weight_bytes"] is None and r["source"] == "unknown" for r in rows[3:])
    code, out, _ = run(["models", tiny_dirs["qwen3_vl"], "--quantize", "nf4", "--dtype", "fp32"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["model", "dtype", "quant", "params"]
    assert lines[1].split()[1:3] == ["fp32", "nf4"] and len(lines) == 2


def test_models_budgets_change_the_activations(tiny_dirs, capsys):
    def activations(*flags):
        code, out, _ = run(["models", tiny_dirs["internvl"], "--quantize", "none", "--json", *flags], capsys)
        assert code == 0
        return json.loads(out)["activation_bytes"]

    assert activations("--max-batch-tokens", "1000") < activations("--max-batch-tokens", "2000")
    assert activations("--max-pixels", "100000") < activations("--max-pixels", "400000")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--quantize", "int4"], "--quantize must be one of none, int8, nf4 or all, got 'int4'"),
        (["--dtype", "fp64"], "--dtype must be one of bf16, fp16, fp32"),
        (["--max-pixels", "0"], "--max-pixels must be a positive number"),
    ],
)
def test_models_bad_flags(flags, message, tiny_dirs, capsys):
    code, _, err = run(["models", tiny_dirs["qwen2_vl"], *flags], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_models_bad_path(capsys, tmp_path):
    code, _, err = run(["models", tmp_path / "missing"], capsys)
    assert code == 2 and "does not exist" in err


def test_score_quantize_nf4(tiny_dirs, photo_paths, capsys):
    pytest.importorskip("bitsandbytes")
    args = ["score", photo_paths[0], "--prompt", "a cat", "--model", tiny_dirs["qwen2_vl"], "--device", "cpu"]
    code, out, _ = run([*args, "--quantize", "nf4", "--json"], capsys)
    assert code == 0 and 0 < json.loads(out)[0]["score"] < 1


@pytest.mark.parametrize("command", ["score", "rerank"])
def test_bad_quantize_is_refused_before_loading(command, tiny_dirs, photo_paths, capsys):
    args = [command, photo_paths[0], "--prompt", "a cat", "--model", tiny_dirs["qwen2_vl"], "--quantize", "int4"]
    code, _, err = run(args, capsys)
    assert code == 2 and "--quantize: quantization must be one of none, int8, nf4, got 'int4'" in err


def test_quantize_with_backend_is_the_servers_choice(photo_paths, capsys):
    args = ["score", photo_paths[0], "--prompt", "a cat", "--backend", "http://127.0.0.1:9", "--quantize", "nf4"]
    code, _, err = run(args, capsys)
    assert code == 2 and "--quantize" in err and "server" in err


def test_serve_bad_quantize_names_the_field(tiny_dirs, capsys):
    code, _, err = run(["serve", "--model", f"j={tiny_dirs['qwen2_vl']}", "--quantize", "int4"], capsys)
    assert code == 2 and "quantization must be one of none, int8, nf4" in err


def test_search_refuses_noise_gradient_with_a_quantised_judge(tiny_dirs, tmp_path, capsys):
    args = ["search", "--prompt", "a cat", "--pipeline", tiny_dirs["qwen2_vl"], "--algorithm", "noise_gradient"]
    code, _, err = run(
        [*args, "--reward-model", tiny_dirs["qwen2_vl"], "--quantize", "nf4", "--out", tmp_path / "b.png"], capsys
    )
    assert code == 2 and "noise_gradient needs the reward's gradient" in err
