"""`rewarddance serve`: settings from flags and files, graceful SIGTERM, and the client's retries."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from helpers import ServerThread, http, png_b64, random_image, start_serve

from rewarddance.backend.cli import build_parser, main, serve_settings
from rewarddance.backend.client import AsyncRewardClient, BackendError, RewardClient
from rewarddance.backend.server.settings import SettingsError, parse_bytes, settings_from_dict


def settings_for(*argv: str):
    return serve_settings(build_parser().parse_args(["serve", *argv]))


def test_flags_make_settings(tmp_path):
    s = settings_for(
        "--model",
        "judge=/m/7b",
        "--model",
        "small=/m/3b",
        "--port",
        "9000",
        "--max-batch-tokens",
        "4096",
        "--max-delay-ms",
        "5",
        "--pin",
        "judge",
        "--trust-remote-code",
        "small",
        "--gpu-memory",
        "40GB",
        "--dtype",
        "bf16",
    )
    assert list(s.models) == ["judge", "small"] and s.default_model == "judge"
    assert s.models["judge"].pinned and not s.models["small"].pinned
    assert s.models["small"].trust_remote_code and not s.models["judge"].trust_remote_code
    assert s.models["judge"].dtype == "bf16" and s.port == 9000 and s.max_batch_tokens == 4096
    assert s.gpu_memory == 40 * 10**9 and s.host == "127.0.0.1"


def test_config_files_toml_and_yaml(tmp_path):
    toml = tmp_path / "rd.toml"
    toml.write_text(
        'port = 8800\ndefault_model = "b"\ncpu_memory = "2GiB"\n'
        '[models.a]\npath = "/m/a"\n[models.b]\npath = "/m/b"\npinned = true\n'
        '[models.b.scoring]\ncriteria = ["alignment"]\nnormalize = "yes_no"\n'
    )
    s = settings_for("--config", str(toml), "--port", "8801")
    assert s.port == 8801 and s.default_model == "b" and s.cpu_memory == 2 * 2**30
    assert s.models["b"].pinned and s.models["b"].load_options()["normalize"] == "yes_no"
    yaml = tmp_path / "rd.yaml"
    yaml.write_text("models:\n  judge: /m/judge\nmax_queue: 7\n")
    s = settings_for("--config", str(yaml))
    assert s.models["judge"].path == "/m/judge" and s.max_queue == 7


@pytest.mark.parametrize(
    "argv,word",
    [
        ([], "no models configured"),
        (["--model", "a=/m/a", "--model", "a=/m/b"], "used twice"),
        (["--model", "../x=/m/a"], "not allowed"),
        (["--model", "a=/m/a", "--pin", "b"], "--pin 'b'"),
        (["--model", "a=/m/a", "--host", "0.0.0.0"], "token"),
        (["--model", "a=/m/a", "--default-model", "z"], "default_model"),
        (["--model", "a=/m/a", "--gpu-memory", "lots"], "--gpu-memory"),
        (["--model", "a=/m/a", "--max-queue", "0"], "max_queue"),
        (["--model", "a=/m/a", "--token", "short"], "8 characters"),
        (["--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_bad_serve_options_exit_2_with_a_message(argv, word, capsys):
    assert main(["serve", *argv]) == 2
    assert word in capsys.readouterr().err


def test_token_allows_public_bind_and_env(monkeypatch):
    monkeypatch.setenv("REWARDDANCE_TOKEN", "from-the-environment")
    s = settings_for("--model", "a=/m/a", "--host", "0.0.0.0")
    assert s.token == "from-the-environment"


def test_bad_config_contents():
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        settings_from_dict({"prot": 1})
    with pytest.raises(SettingsError, match="models.a: unknown key"):
        settings_from_dict({"models": {"a": {"path": "/m", "dtpye": "bf16"}}})
    with pytest.raises(SettingsError, match="scoring"):
        settings_from_dict({"models": {"a": {"path": "/m", "scoring": {"normalize": "x"}}}}).validate()
    assert (
        parse_bytes("512MiB", "x") == 512 * 2**20
        and parse_bytes(1000, "x") == 1000
        and parse_bytes("1.5 GB", "x") == 1.5e9
    )


def test_backend_flag_refuses_local_loading_options(tmp_path, capsys):
    random_image(8, 8).save(tmp_path / "a.png")
    assert (
        main(["score", str(tmp_path / "a.png"), "--prompt", "x", "--backend", "http://127.0.0.1:1", "--dtype", "fp16"])
        == 2
    )
    assert "--dtype" in capsys.readouterr().err


# --- graceful shutdown ---------------------------------------------------------------------------------------------
def test_sigterm_finishes_in_flight_requests_and_exits_0(tiny_dirs):
    # a grace period far beyond the work (a few seconds on an idle machine), so a loaded machine cannot turn
    # finished-in-time into aborted (the abort past the grace period has its own test)
    proc, url = start_serve(tiny_dirs["qwen2_5_vl"], "--grace-period", "120")
    try:
        # enough work that the requests are surely still running 0.3 s after they start (tiny models are fast)
        images = [png_b64(random_image(96, 96, seed=i)) for i in range(96)]
        results: dict[int, tuple] = {}

        def send(i: int) -> None:
            results[i] = http("POST", url + "/v1/score", {"prompt": f"prompt {i}", "images": images})

        threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        in_flight = sum(t.is_alive() for t in threads)
        proc.send_signal(signal.SIGTERM)
        started = time.time()
        for t in threads:
            t.join(120)
        code = proc.wait(120)
        assert time.time() - started < 120
    finally:
        if proc.poll() is None:
            proc.kill()
    assert in_flight >= 1  # the signal really arrived while requests were running
    assert code == 0, proc.stderr.read()
    assert sorted(results) == list(range(6))
    for status, body, _ in results.values():
        assert status == 200 and len(body["scores"]) == 96


# --- client retries ---------------------------------------------------------------------------------------------------
@pytest.fixture
def flaky_server():
    """An app answering 503 (Retry-After 0) twice, then a score."""
    from aiohttp import web

    calls = {"n": 0}

    async def score(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return web.json_response(
                {"error": {"type": "queue_full", "message": "busy"}}, status=503, headers={"Retry-After": "0"}
            )
        return web.json_response({"scores": [0.25], "model": "m", "usage": {}})

    app = web.Application()
    app.router.add_post("/v1/score", score)
    with ServerThread(app) as server:
        yield server, calls


def test_clients_retry_503(flaky_server):
    import asyncio

    server, calls = flaky_server
    assert RewardClient(server.url, backoff=0.01).score([random_image(8, 8)], "x").scores == [0.25]
    assert calls["n"] == 3
    calls["n"] = 0

    async def go():
        async with AsyncRewardClient(server.url, backoff=0.01) as c:
            return await c.score([random_image(8, 8)], "x")

    assert asyncio.run(go()).scores == [0.25]
    calls["n"] = 0
    with pytest.raises(BackendError) as err:
        RewardClient(server.url, retries=1, backoff=0.01).score([random_image(8, 8)], "x")
    assert err.value.status == 503 and err.value.type == "queue_full"


def test_client_reports_an_unreachable_backend():
    with pytest.raises(BackendError, match="rewarddance serve"):
        RewardClient("http://127.0.0.1:9", retries=1, backoff=0.01).health()
    with pytest.raises(ValueError, match="http://"):
        RewardClient("localhost:8765")


def test_serve_start_failures_exit_2(tiny_dirs, tmp_path, capsys):
    import socket

    assert main(["serve", "--model", f"m={tmp_path / 'missing'}", "--port", "0", "--preload"]) == 2
    assert "model 'm': model directory" in capsys.readouterr().err  # refused at start, naming the model
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", f"m={tiny_dirs['qwen2_5_vl']}", "--port", str(port)]) == 2
    assert "choose another --port" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,word",
    [
        (["search", "--pipeline", "p", "--prompt", "x", "--algorithm", "magic"], "--algorithm must be one of"),
        (
            ["search", "--pipeline", "p", "--prompt", "x", "--budget", "5", "--steps", "10"],
            "--budget (5 denoiser calls)",
        ),
        (["search", "--pipeline", "p", "--prompt", "x", "--out", "best.txt"], "--out must be an image"),
        (["make-pairs", "--out", "d", "--edits", "sepia"], "unknown edit(s) sepia"),
        (["make-pairs", "--out", "d", "--n", "1"], "--n must be at least 2"),
        (["eval-rm", "--model", "m", "--pairs", "/nonexistent/pairs.jsonl"], "does not exist"),
        (["train-rm", "--config", "/nonexistent/rm.toml"], "does not exist"),
    ],
)
def test_new_commands_refuse_bad_input(argv, word, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert word in capsys.readouterr().err


def test_train_rm_steps_override_is_validated(tmp_path, capsys):
    cfg = tmp_path / "rm.toml"
    (tmp_path / "m").mkdir()
    (tmp_path / "p.jsonl").write_text("")
    cfg.write_text('model = "m"\npairs = "p.jsonl"\nout = "o"\n')
    assert main(["train-rm", "--config", str(cfg), "--steps", "0"]) == 2
    assert "steps must be a positive integer" in capsys.readouterr().err
