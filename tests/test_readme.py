"""README cannot drift: every `rewarddance` command line in it parses with the real parser, every config block
loads with the real loader, every Python block compiles, and the snippets that run offline run as written
(the main job after its install step, the reward-model walkthrough, the server's curl call; the steer loop
runs in tests/test_steer_loop.py)."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib

from rewarddance.backend.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SEPARATORS = {"&&", "||", "|", ";", "{", "}", "(", ")"}


def blocks(language: str) -> list[str]:
    """The bodies of README's fenced blocks in `language`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.S | re.M)


def block_with(language: str, text: str) -> str:
    """The one README block in `language` that contains `text`."""
    found = [b for b in blocks(language) if text in b]
    assert len(found) == 1, f"README has {len(found)} {language} blocks containing {text!r}"
    return found[0]


def logical_lines(block: str) -> list[str]:
    """A shell block's command lines: continuations (a trailing backslash, pipe or &&) joined, heredoc bodies
    left out."""
    lines, current, heredoc = [], "", None
    for line in block.splitlines():
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        marker = re.search(r"<<-?\s*'?(\w+)'?", line)
        if marker:
            heredoc = marker.group(1)
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        if line.rstrip().endswith(("|", "&&")):
            current += line.rstrip() + " "
            continue
        lines.append(current + line)
        current = ""
    return [line for line in lines if line.strip()]


def rewarddance_commands(line: str) -> list[list[str]]:
    """The argument lists given to `rewarddance` (directly, or `-m rewarddance`) in one shell line."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    commands = []
    for words in segments:
        words = words[: next((i for i, w in enumerate(words) if w.startswith(("<", ">"))), len(words))]
        if words[:1] == ["rewarddance"]:
            commands.append(words[1:])
        elif "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["rewarddance"]:
            commands.append(words[words.index("-m") + 2 :])
    return commands


def readme_command_lines() -> list[tuple[str, list[str]]]:
    """Every `rewarddance` command in README's bash blocks, with the line it came from."""
    return [(line, argv) for b in blocks("bash") for line in logical_lines(b) for argv in rewarddance_commands(line)]


def test_readme_shows_every_command():
    names = {argv[0] for _, argv in readme_command_lines() if argv}
    assert len(readme_command_lines()) >= 25
    for name in ("score", "rerank", "serve", "search", "train", "train-rm", "eval-rm", "make-pairs", "tiny-model"):
        assert name in names, f"README shows no `rewarddance {name}`"


def test_every_readme_command_line_parses():
    parser = build_parser()
    for line, argv in readme_command_lines():
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse's own error (unknown flag, bad choice) exits 2
            pytest.fail(f"README command does not parse ({exc}): {line.strip()}")


def test_readme_python_and_json_blocks_are_valid():
    for i, code in enumerate(blocks("python")):
        compile(code, f"README python block {i}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)  # as in a notebook
    for text in blocks("json"):
        json.loads(text)


def test_readme_config_blocks_load_with_the_real_loaders(tmp_path, monkeypatch):
    from rewarddance.backend.rl.config import load_rl_config
    from rewarddance.backend.rl.trainers import TrainerConfig
    from rewarddance.backend.server.settings import settings_from_dict
    from rewarddance.backend.training.trainer import load_train_config

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # hub ids are allowed; nothing is fetched here
    run_toml, rm_toml = block_with("toml", "# run.toml"), block_with("toml", "# rm.toml")
    (tmp_path / "prompts.txt").write_text("a red fox\n")
    (tmp_path / "run.toml").write_text(run_toml)
    cfg = load_rl_config(tmp_path / "run.toml")
    assert cfg.algorithm == "grpo" and cfg.eval_every == 10
    assert set(tomllib.loads(run_toml)["trainer"]) <= set(TrainerConfig.__dataclass_fields__)
    (tmp_path / "data").mkdir()
    for name in ("pairs.jsonl", "eval.jsonl"):
        (tmp_path / "data" / name).write_text("")
    (tmp_path / "rm.toml").write_text(rm_toml)
    assert load_train_config(tmp_path / "rm.toml").objective == "pairwise"
    server = settings_from_dict(tomllib.loads(block_with("toml", "default_model")))
    assert server.default_model == "judge" and server.models["judge"].pinned


def bash(script: str, where: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a README snippet with bash (errexit, pipefail) in `where`, this interpreter's scripts on PATH."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=where, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_main_job_runs_as_written(tmp_path):
    """The first set-up command after its install steps (which CI's own set-up runs), word for word."""
    command = blocks("bash")[0].strip()
    assert command.startswith("python3 -m venv .venv") and 'pip install -e ".[demo]"' in command
    job = command.split('pip install -e ".[demo]" && ', 1)[1]
    done = bash(job, tmp_path)
    photos = sorted((tmp_path / "demo" / "photos").glob("*.png"))
    assert len({p.read_bytes() for p in photos}) == len(photos) >= 6  # every sample photo a different picture
    ranks = [line for line in done.stdout.splitlines() if re.match(r"\s+\d+\s+\d\.\d+\s", line)]
    assert len(ranks) == 4 and (tmp_path / "demo" / "best.png").is_file()
    rows = [json.loads(line) for line in (tmp_path / "demo" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(photos) and {r["prompt"] for r in rows} == {"a cat"}


def test_reward_model_walkthrough_runs_as_written(tmp_path):
    """The train-rm walkthrough's commands word for word (not the pip line), with its rm.toml pointed at a tiny
    checkpoint for a few CPU steps (every file name in it kept)."""
    walkthrough = block_with("bash", "rewarddance make-pairs --out data")
    commands = "\n".join(line for line in walkthrough.splitlines() if not line.startswith("pip install"))
    rm_toml = tomllib.loads(block_with("toml", "# rm.toml"))
    assert rm_toml["pairs"] == "data/pairs.jsonl" and rm_toml["eval_pairs"] == "data/eval.jsonl"
    tiny = ["model = 'judge0'", "device = 'cpu'", "dtype = 'fp32'", "steps = 2", "batch_size = 2"]
    tiny += ["gradient_checkpointing = false", "save_every = 0"]
    kept = [
        line
        for line in block_with("toml", "# rm.toml").splitlines()
        if line.split("=")[0].strip()
        not in {"model", "steps", "batch_size", "dtype", "gradient_checkpointing", "save_every"}
    ]
    top, _, scoring = "\n".join(kept).partition("[scoring]")
    (tmp_path / "rm.toml").write_text("\n".join(tiny) + "\n" + top + "[scoring]" + scoring)
    bash("rewarddance tiny-model --family qwen2_5_vl --size xs --out judge0 --quiet", tmp_path)
    done = bash(commands, tmp_path)
    assert (tmp_path / "data" / "eval.jsonl").is_file() and (
        tmp_path / "runs" / "rm" / "model" / "config.json"
    ).is_file()
    assert "in_domain" in done.stdout and "out_of_domain" in done.stdout
    score_line = done.stdout.strip().splitlines()[-1].split("\t")
    assert 0 <= float(score_line[0]) <= 1 and score_line[1] == "data/images/0000_chosen.png"


def free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("base64") is None, reason="needs curl and base64")
def test_server_curl_snippet_runs_as_written_with_a_large_image(tmp_path, tiny_dirs):
    """README's curl call (the body streamed on stdin) against a server on its port, with a photo of over 96 KB
    (the size at which an image on the command line hits "Argument list too long")."""
    if not free(8765):
        pytest.skip("port 8765 is taken")
    from PIL import Image

    from rewarddance.backend.sample_photos import named_sample_photos

    Image.fromarray(named_sample_photos()["astronaut"]).save(tmp_path / "fox.png")
    assert (tmp_path / "fox.png").stat().st_size > 96_000
    curl = next(line for line in logical_lines(block_with("bash", "v1/score")) if "curl" in line)
    server = subprocess.Popen(
        [sys.executable, "-m", "rewarddance", "serve", "--model", f"judge={tiny_dirs['qwen2_5_vl']}", "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while free(8765) and time.time() < deadline:
            time.sleep(0.2)
        answer = json.loads(bash(curl, tmp_path).stdout)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert answer["model"] == "judge" and len(answer["scores"]) == 1 and 0 <= answer["scores"][0] <= 1
