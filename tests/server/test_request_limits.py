"""Issue 16's first attacks: bounded work per request (text limits before tokenising, max_query_tokens), batches
abandoned between forwards, shutdown within the grace period, and two models under a budget for one taking turns
instead of thrashing."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from helpers import ServerThread, http, png_b64, random_image, start_serve

from rewarddance.backend.server import limits
from rewarddance.backend.server.app import create_app
from rewarddance.backend.server.settings import ModelSpec, ServerSettings

from .server_helpers import tiny_settings


def score(server, **body):
    """POST /v1/score; (status, answer)."""
    status, answer, _ = http("POST", server.url + "/v1/score", {"prompt": "a fox", **body})
    return status, answer


@pytest.fixture(scope="module")
def limited(tiny_dirs):
    """A server with the default text limits and max_query_tokens 400 (a tiny image is about 100 tokens)."""
    with ServerThread(create_app(tiny_settings(tiny_dirs, max_query_tokens=400))) as server:
        yield server


def test_text_over_its_limit_is_refused_before_tokenising(limited, b64_image):
    before = http("GET", limited.url + "/metrics")[1]
    attacks = [
        ({"criteria": ["alignment"] * 10000}, "criteria: 10000 items is over the limit of 16"),
        ({"prompt": "a" * 1_000_000}, f"prompt: 1000000 characters is over the limit of {limits.MAX_PROMPT_CHARS}"),
        ({"question": "{prompt}" * 1000, "prompt": "b" * 3000}, "question: 8000 characters"),
        ({"question": "{prompt} " * 400, "prompt": "b" * 3000}, "question (with {prompt} and {criteria} filled in)"),
        ({"criteria": ["x" * 5000]}, "criteria[0]: 5000 characters"),
        ({"answer": "yes" * 100}, "answer: 300 characters"),
        ({"prompt": ["p" * 5000]}, "prompt: 5000 characters"),
        ({"few_shot": [{"image": b64_image, "verdict": True, "prompt": "c" * 5000}]}, "few_shot[0].prompt"),
    ]
    for body, message in attacks:
        started = time.perf_counter()
        status, answer = score(limited, images=[b64_image], **body)
        assert status == 413 and answer["error"]["type"] == "too_long", (body.keys(), answer)
        assert message in answer["error"]["message"], answer
        assert time.perf_counter() - started < 5
    tokens = [line for line in http("GET", limited.url + "/metrics")[1].splitlines() if "tokens_total{" in line]
    assert tokens == [line for line in before.splitlines() if "tokens_total{" in line]  # no forward ran
    assert score(limited, images=[b64_image], criteria=["alignment", "plausibility"])[0] == 200  # still serving
    from rewarddance.backend.scoring.config import ScoringConfig

    at_limit = ScoringConfig().with_overrides(criteria=tuple(["alignment"] * limits.MAX_CRITERIA), question="{prompt}")
    limits.check_request_text(["p" * limits.MAX_PROMPT_CHARS], at_limit, [])  # at every limit: accepted


def test_max_query_tokens_refuses_a_long_query_alone(limited, b64_image):
    big = png_b64(random_image(448, 448, seed=3))  # about 256 image tokens, plus the few-shot example's
    examples = [{"image": big, "verdict": True}]
    status, answer = score(limited, images=[big], few_shot=examples)
    assert status == 413 and "over max_query_tokens (400)" in answer["error"]["message"]
    assert "--max-query-tokens" in answer["error"]["message"]
    assert score(limited, images=[b64_image])[0] == 200  # the server goes on serving


def test_two_models_under_a_budget_for_one_take_turns_instead_of_thrashing(tiny_dirs, b64_image):
    from rewarddance.backend.server.manager import estimate_bytes

    specs = {
        n: ModelSpec(n, str(tiny_dirs[f]), dtype="fp32", device="cpu")
        for n, f in (("a", "qwen2_vl"), ("b", "qwen2_5_vl"))
    }
    budget = int(max(estimate_bytes(s)["cpu"] for s in specs.values()) * 1.5)  # room for one model at a time
    with ServerThread(create_app(ServerSettings(models=specs, cpu_memory=budget, min_residency_s=5.0))) as server:
        results: list[int] = []

        def send(i: int) -> None:
            body = {"model": "ab"[i % 2], "prompt": "x", "images": [b64_image]}
            results.append(http("POST", server.url + "/v1/score", body)[0])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        metrics = http("GET", server.url + "/metrics")[1]
    assert results == [200] * 20  # none got 503 model_unloading: requests wait for their model to come back
    loads = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("rewarddance_model_loads"))
    assert loads <= 4, metrics  # each model served its queue per load (it was 19 loads for 20 requests)


def test_maximal_requests_are_bounded_and_sigterm_exits_within_the_grace_period(tiny_dirs):
    """20 concurrent requests, each as large as the limits allow in text, then SIGTERM while a second wave runs."""
    grace = 6.0
    proc, url = start_serve(tiny_dirs["qwen2_5_vl"], "--grace-period", str(grace), "--max-batch-tokens", "512")
    try:
        image = png_b64(random_image(64, 64, seed=1))
        maximal = {
            "prompt": "p" * limits.MAX_PROMPT_CHARS,
            "criteria": ["c" * 200] * limits.MAX_CRITERIA,
            "images": [image],
        }

        def wave(n: int, out: list) -> list[threading.Thread]:
            threads = [
                threading.Thread(target=lambda: out.append(http("POST", url + "/v1/score", maximal)[:2]))
                for _ in range(n)
            ]
            for t in threads:
                t.start()
            return threads

        first: list = []
        started = time.perf_counter()
        for t in wave(20, first):
            t.join(120)
        took = time.perf_counter() - started
        assert [status for status, _ in first] == [200] * 20 and took < 90, (took, first[:1])
        assert http("GET", url + "/health")[0] == 200
        second: list = []
        threads = wave(40, second)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        stopping = time.perf_counter()
        code = proc.wait(grace + 10)
        stopped_in = time.perf_counter() - stopping
        for t in threads:
            t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and stopped_in < grace + 1.0, (stopped_in, proc.stderr.read())
    errors = {answer["error"]["type"] for status, answer in second if status != 200 and isinstance(answer, dict)}
    assert errors <= {"server_stopping"}, second[:3]


def test_lone_surrogates_and_raw_byte_tokens_are_client_errors(tiny_dirs, b64_image):
    import socket

    with ServerThread(create_app(tiny_settings(tiny_dirs, token="s3cret-token"))) as server:
        body = b'{"prompt": "a fox \\ud800", "images": []}'
        headers = {"Content-Type": "application/json", "Authorization": "Bearer s3cret-token"}
        status, answer, _ = http("POST", server.url + "/v1/score", body, headers)
        assert (
            status == 400 and "lone surrogate" in answer["error"]["message"] and "prompt" in answer["error"]["message"]
        )
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:  # a header urllib cannot send
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\xc3\r\n\r\n")
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 401"), reply[:100]
        assert http("GET", server.url + "/health")[0] == 200


def test_slow_bodies_get_408_and_idle_connections_are_closed(tiny_dirs):
    import asyncio
    import socket

    from rewarddance.backend.server.run import serve

    with socket.socket() as probe:  # a free port for the in-process server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = tiny_settings(tiny_dirs, port=port, body_timeout_s=1.0, keepalive_s=1.0)

    async def attack():
        server = asyncio.ensure_future(serve(settings, ready_message=False))
        await asyncio.sleep(1.5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"prompt": '  # and then nothing more
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await idle_writer.drain()
        await asyncio.wait_for(idle_reader.readuntil(b"\r\n\r\n"), 10)
        await asyncio.wait_for(idle_reader.read(1000), 10)  # the body
        closed = await asyncio.wait_for(idle_reader.read(), 10)  # EOF once the keep-alive timeout passes
        server.cancel()
        return status, closed

    status, closed = asyncio.run(attack())
    assert status.startswith(b"HTTP/1.1 408") and closed == b""


@pytest.mark.parametrize(
    "key,value",
    [("max_query_tokens", 0), ("min_residency_s", -1.0), ("keepalive_s", 0), ("body_timeout_s", "soon")],
)
def test_new_limits_refuse_bad_values_naming_the_setting(key, value):
    from rewarddance.backend.server.settings import SettingsError

    with pytest.raises(SettingsError, match=key):
        ServerSettings(**{key: value}).validate(require_models=False)


def test_serve_max_query_tokens_flag_refuses_a_bad_value(tiny_dirs, capsys):
    from rewarddance.backend.cli import main

    assert main(["serve", "--model", f"t={tiny_dirs['qwen2_5_vl']}", "--max-query-tokens", "0"]) == 2
    err = capsys.readouterr().err
    assert "max_query_tokens must be a positive number" in err and len(err.strip().splitlines()) == 1
