"""Every command fed its bad inputs: exit status 2, one line on stderr naming the input, no traceback, and no
model or pipeline loaded when the input could be checked first."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from rewarddance.backend.cli import main


@pytest.fixture
def loads(monkeypatch):
    """Counts of reward-model, pipeline and server starts (each refused: none should be reached)."""
    from rewarddance.backend.generators import diffusers_adapter
    from rewarddance.backend.reward_model import RewardModel
    from rewarddance.backend.server import run as server_run

    counts = {"model": 0, "pipeline": 0, "server": 0}

    def counted(name):
        def refuse(*args, **kwargs):
            counts[name] += 1
            raise AssertionError(f"a {name} was loaded before the input was checked")

        return refuse

    monkeypatch.setattr(RewardModel, "from_pretrained", classmethod(lambda cls, *a, **k: counted("model")()))
    monkeypatch.setattr(diffusers_adapter, "load_pipeline", counted("pipeline"))
    monkeypatch.setattr(server_run, "run", counted("server"))
    return counts


@pytest.fixture
def place(tmp_path, tiny_dirs, photo_paths):
    """Paths the table refers to: a tiny model, a folder of photos, a plain file, an rm and an RL config."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in photo_paths[:3]:
        shutil.copy(p, photos / p.name)
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"file": photo_paths[0].name, "prompt": "a cat"}) + "\n")
    (tmp_path / "pairs.jsonl").write_text("")
    (tmp_path / "rm.toml").write_text('model = "no_such_model"\npairs = "pairs.jsonl"\nout = "o"\n')
    rl = 'algorithm = "raft"\nout = "o"\nprompts = ["a"]\n'
    (tmp_path / "rl_generator.toml").write_text(
        rl + 'generator = { kind = "diffusers", path = "no/such/pipe" }\n'
        f'rewards = [ {{ kind = "pointwise", model = "{tiny_dirs["qwen2_5_vl"]}" }} ]\n'
    )
    (tmp_path / "rl_reward.toml").write_text(
        rl + 'generator = { kind = "tiny" }\nrewards = [ { kind = "pointwise", model = "Org/not-downloaded" } ]\n'
    )
    return {
        "model": str(tiny_dirs["qwen2_5_vl"]),
        "photos": str(photos),
        "photo": str(photos / photo_paths[0].name),
        "file": str(tmp_path / "file.txt"),
        "tmp": tmp_path,
    }


def cases(p: dict) -> list[tuple[list[str], str]]:
    """(argv, text the message must contain) for each bad input."""
    m, photos, photo, file, tmp = p["model"], p["photos"], p["photo"], p["file"], p["tmp"]
    score = ["score", photo, "--model", m]
    rerank = ["rerank", photos, "--model", m, "--prompt", "a cat"]
    search = ["search", "--pipeline", str(tmp), "--reward-model", m, "--prompt", "a fox", "--steps", "2"]
    table = [
        (["score", photos, "--prompt", "x", "--model", m], "is a directory; `rewarddance rerank"),
        (score + ["--prompt", ""], "--prompt is empty"),
        (score + ["--prompt", "   "], "--prompt is empty"),
        (score + ["--prompt", "x", "--criteria", "alignmnet"], "did you mean 'alignment'"),
        (score + ["--prompt", "x", "--criteria-text", ""], "--criteria-text is empty"),
        (["score", photo, "--prompt", "x", "--model", str(tmp / "nowhere")], "--model: model directory"),
        (["score", photo, "--prompt", "x", "--model", file], "--model: "),
        (score + ["--prompt", "x", "--question", ""], "--question is empty"),
        (["score", str(tmp / "missing.png"), "--prompt", "x", "--model", m], "does not exist"),
        (rerank + ["--sheet", "best.txt"], "--sheet must end in .png"),
        (rerank + ["--out", f"{file}/results.jsonl"], "--out"),
        (rerank + ["--out", str(tmp)], "--out must end in .jsonl or .csv"),
        (["rerank", photos, "--model", m, "--prompts", str(tmp / "prompts.jsonl")], "no prompt for"),
        (["rerank", photos, "--model", m, "--prompt", ""], "--prompt is empty"),
        (["rerank", file, "--model", m, "--prompt", "x"], "is a file; rerank takes a folder"),
        (["rerank", str(tmp / "nowhere"), "--model", m, "--prompt", "x"], "does not exist"),
        (rerank + ["--criteria", "aesthetic"], "did you mean 'aesthetics'"),
        (rerank + ["--model", "not a model"], "--model: model directory 'not a model'"),
        (search[:2] + [str(tmp / "nowhere")] + search[3:], "--pipeline: "),
        (search[:4] + [str(tmp / "nowhere")] + search[5:], "--reward-model: "),
        (search[:6] + [""] + search[7:], "--prompt is empty"),
        (search + ["--out", f"{file}/best.png"], "--out"),
        (search + ["--criteria", "alignmnet"], "did you mean 'alignment'"),
        (search + ["--save-candidates", file], "--save-candidates"),
        (["train", "--config", str(tmp / "rl_generator.toml")], "generator.path: "),
        (["train-rm", "--config", str(tmp / "rm.toml")], "model: model directory 'no_such_model'"),
        (["eval-rm", "--model", str(tmp / "nowhere"), "--pairs", str(tmp / "pairs.jsonl")], "--model: "),
        (["serve", "--model", f"a={tmp / 'nowhere'}", "--model", f"b={m}"], "model 'a': model directory"),
        (["make-pairs", "--out", f"{file}/data"], "--out"),
        (["sample-photos", "--out", f"{file}/photos"], "--out"),
    ]
    if importlib.util.find_spec("flash_attn") is None:
        table.append(
            (score + ["--prompt", "x", "--attn", "flash_attention_2"], "--attn: attention 'flash_attention_2'")
        )
    return table


def test_bad_inputs_fail_in_one_line_before_anything_loads(place, loads, capsys, monkeypatch):
    monkeypatch.chdir(place["tmp"])
    for argv, text in cases(place):
        code = main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("rewarddance: error: "), (argv, err)
        assert text in lines[0] and "Traceback" not in err, (argv, err)
        assert loads == {"model": 0, "pipeline": 0, "server": 0}, argv


def test_offline_hub_ids_are_refused_before_loading(place, loads, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(place["tmp"])
    for argv, text in [
        (
            ["search", "--pipeline", "Org/not-downloaded", "--reward-model", place["model"], "--prompt", "x"],
            "--pipeline",
        ),
        (["score", place["photo"], "--prompt", "x", "--model", "Org/not-downloaded"], "--model"),
        (["train", "--config", str(place["tmp"] / "rl_reward.toml")], "rewards[].model"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and "hf download Org/not-downloaded" in err and "\n" not in err, err
    assert loads == {"model": 0, "pipeline": 0, "server": 0}


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(place, capsys, monkeypatch):
    from rewarddance.backend.cli import scoring

    def broken(*args, **kwargs):
        raise RuntimeError("something broke\ndeep inside")

    monkeypatch.setattr(scoring, "load_reward_model", broken)
    argv = ["score", place["photo"], "--prompt", "x", "--model", place["model"]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "rewarddance: error: unexpected RuntimeError: something broke; deep inside "
        "(rerun with --debug for the traceback)"
    )
    with pytest.raises(RuntimeError, match="something broke"):
        main(argv + ["--debug"])


def test_version_and_common_flags(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("rewarddance ") and "torch " in out and "transformers " in out
    for command in ("score", "rerank", "search", "train", "train-rm", "serve", "make-pairs", "sample-photos"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--quiet" in capsys.readouterr().out


def test_quiet_runs_print_nothing_on_stderr(place, capsys, monkeypatch):
    monkeypatch.chdir(place["tmp"])
    assert main(["score", place["photo"], "--prompt", "a cat", "--model", place["model"], "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.strip().endswith(place["photo"])  # no loading bar, no warning


def test_training_summary_line_keeps_small_rewards_apart_and_lists_the_chart_on_its_own():
    from rewarddance.backend.cli.train import summary_line

    summary = {"reward_before": 0.00012346, "reward_after": 0.00015678, "step": 20}
    summary["files"] = {"peft": "runs/x/lora_peft", "comfyui": "runs/x/lora_comfyui.safetensors", "chart": "c.png"}
    assert summary_line("raft", summary) == (
        "raft: held-out reward 0.0001235 -> 0.0001568 after 20 steps; "
        "LoRA: runs/x/lora_peft, runs/x/lora_comfyui.safetensors; chart: c.png"
    )
