"""The HTTP backend end to end: concurrency vs offline scores, options, video and multipart, models, auth, mounting."""

from __future__ import annotations

import asyncio
import base64
import json
import random

import pytest
from helpers import ServerThread, http, random_image

from rewarddance.backend.client import AsyncRewardClient, BackendError, RewardClient
from rewarddance.backend.server.app import ScoringService, create_app, mount
from rewarddance.backend.server.settings import ModelSpec, ServerSettings

from .server_helpers import tiny_settings

PROMPTS = [
    "a photo of an astronaut",
    "a cat on a sofa",
    "a cup of coffee",
    "a rocket launch",
    "a red fox in the snow",
    "microscope slide",
    "a city at night",
    "a bowl of fruit",
]


@pytest.fixture(scope="module")
def image_files(photo_paths, tmp_path_factory):
    """16 distinct image files: the sample photos plus random images of several sizes."""
    root = tmp_path_factory.mktemp("server_images")
    files = list(photo_paths)
    for i in range(16 - len(files)):
        path = root / f"random_{i:02d}.png"
        random_image(64 + 8 * i, 160 - 6 * i, seed=100 + i).save(path)
        files.append(path)
    return files


# --- the bar: 64 clients x 8 requests == offline scores --------------------------------------------------------
def test_64_concurrent_clients_get_offline_scores(served, image_files, reward_models):
    """512 requests from 64 concurrent clients: every score equals the offline one, in the right place."""
    rm = reward_models("qwen2_5_vl")
    offline = {p: rm.score(image_files, p).scores for p in PROMPTS}  # what `rewarddance score` computes
    rng = random.Random(0)
    plan = [
        [(rng.choice(PROMPTS), rng.sample(range(len(image_files)), rng.randint(1, 3))) for _ in range(8)]
        for _ in range(64)
    ]
    encoded = {i: base64.b64encode(f.read_bytes()).decode() for i, f in enumerate(image_files)}

    async def client(requests):
        async with AsyncRewardClient(served.url, retries=0) as c:
            out = []
            for prompt, idx in requests:
                body = c.body(None, prompt=prompt, images=[encoded[i] for i in idx])
                out.append((await c.request("POST", "/v1/score", body))["scores"])
            return out

    async def everyone():
        return await asyncio.gather(*(client(r) for r in plan))

    results = asyncio.run(everyone())
    checked = 0
    for requests, answers in zip(plan, results):
        assert len(answers) == len(requests)
        for (prompt, idx), scores in zip(requests, answers):
            assert len(scores) == len(idx)
            for i, s in zip(idx, scores):
                assert s == pytest.approx(offline[prompt][i], abs=1e-4, rel=1e-3)
                checked += 1
    assert checked == sum(len(idx) for r in plan for _, idx in r)
    metrics = http("GET", served.url + "/metrics")[1]
    average = [line for line in metrics.splitlines() if line.startswith("rewarddance_average_batch_requests")]
    assert average and float(average[0].split()[-1]) > 1.5  # requests from different clients were merged


def test_score_matches_cli_score(served, image_files, capsys):
    """`rewarddance score --backend URL` prints the same scores as the local `rewarddance score`."""
    from rewarddance.backend.cli import main

    files = [str(f) for f in image_files[:4]]
    assert main(["score", *files, "--prompt", "a cat", "--json", "--backend", served.url]) == 0
    remote = json.loads(capsys.readouterr().out)
    service_settings = served_settings(served)
    assert (
        main(
            [
                "score",
                *files,
                "--prompt",
                "a cat",
                "--json",
                "--model",
                service_settings.models["qwen"].path,
                "--dtype",
                "fp32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    local = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in remote] == files
    for got, want in zip(remote, local):
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)


def served_settings(server: ServerThread) -> ServerSettings:
    from rewarddance.backend.server.app import SERVICE_KEY

    return server.app[SERVICE_KEY].settings


def test_compare_rank_tournament_match_the_engine(served, image_files, reward_models):
    rm = reward_models("qwen2_5_vl")
    c = RewardClient(served.url)
    files = image_files[:4]
    assert c.compare(files[1:], files[0], "a cat").scores == pytest.approx(
        rm.compare(files[1:], files[0], "a cat").scores, abs=1e-5
    )
    ranked, local = c.rank(files, "a cat", top_k=2), rm.rank(files, "a cat", top_k=2)
    assert ranked.indices == local.indices and ranked.scores == pytest.approx(local.scores, abs=1e-5)
    t, lt = c.tournament(files[:3], "a cat"), rm.tournament(files[:3], "a cat")
    assert t.ranking == lt.ranking and t.wins == lt.wins
    assert sum(t.matrix, []) == pytest.approx(sum(lt.matrix, []), abs=1e-5)
    assert c.last_usage["queries"] == 6


def test_request_options_change_the_score_like_the_engine(served, image_files, reward_models):
    rm = reward_models("qwen2_5_vl")
    c = RewardClient(served.url)
    files = image_files[:2]
    for opts in (
        {"normalize": "yes_no"},
        {"criteria": ["alignment", "aesthetics"]},
        {"answer": "Yes", "answer_variants": True},
        {"question": 'Is "{prompt}" visible here?', "system": "You are a strict judge."},
    ):
        assert c.score(files, "a cat", **opts).scores == pytest.approx(
            rm.score(files, "a cat", **opts).scores, abs=1e-5
        )
    with_reasons = c.score(files[:1], "a cat", reasons=True, reason_tokens=4)
    assert len(with_reasons.reasons) == 1 and isinstance(with_reasons.reasons[0], str)


def test_sampled_judgements_over_http_equal_the_engine(served, image_files, reward_models):
    rm = reward_models("qwen2_5_vl")
    c = RewardClient(served.url)
    opts = {"cot": "reasoning_first", "reason_tokens": 4, "samples": 3, "temperature": 1.0, "top_p": 0.9, "seed": 5}
    remote, local = c.score(image_files[:2], "a cat", **opts), rm.score(image_files[:2], "a cat", **opts)
    assert remote.scores == pytest.approx(local.scores, abs=1e-5)
    assert remote.spread == pytest.approx(local.spread, abs=1e-5) and remote.reasons == local.reasons


def test_video_and_multipart(served, tiny_dirs, reward_models):
    import torch

    from rewarddance.backend.media import Video, pil_to_tensor

    rm = reward_models("qwen2_5_vl")
    frames = torch.stack([pil_to_tensor(random_image(56, 56, seed=s)) for s in range(4)])
    video = Video(frames, fps=4.0)
    c = RewardClient(served.url)
    assert c.score([video], "a cat").scores == pytest.approx(rm.score([video], "a cat").scores, abs=1e-5)
    # multipart: raw file parts plus a json part
    img = random_image(40, 40, seed=3)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    boundary = "XyZ"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + buf.getvalue()
        + b"\r\n",
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="json"\r\n\r\n{{"normalize": "yes_no"}}\r\n'.encode(),
        f"--{boundary}--\r\n".encode(),
    ]
    status, body, _ = http(
        "POST", served.url + "/v1/score", b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert status == 200, body
    assert body["scores"] == pytest.approx(rm.score([img], "a cat", normalize="yes_no").scores, abs=1e-5)


# --- models, status, docs ---------------------------------------------------------------------------------------------
def test_models_ready_load_unload(tiny_dirs, b64_image):
    settings = tiny_settings(tiny_dirs)
    with ServerThread(create_app(settings)) as server:
        assert http("GET", server.url + "/ready")[0] == 503
        models = http("GET", server.url + "/v1/models")[1]
        assert models["models"][0]["name"] == "qwen" and models["models"][0]["loaded"] is False
        status, loaded, _ = http("POST", server.url + "/v1/models/qwen/load", b"")
        assert status == 200 and loaded["loaded"] and loaded["memory_bytes"]["cpu"] > 0
        assert http("GET", server.url + "/ready")[0] == 200
        assert http("GET", server.url + "/v1/models")[1]["memory"]["used"]["cpu"] == loaded["memory_bytes"]["cpu"]
        assert http("POST", server.url + "/v1/models/qwen/unload", b"")[1] == {"model": "qwen", "unloaded": True}
        assert http("GET", server.url + "/ready")[0] == 503
        # loads again on first use
        assert http("POST", server.url + "/v1/score", {"prompt": "x", "images": [b64_image]})[0] == 200
        assert http("GET", server.url + "/ready")[0] == 200


def test_memory_budget_evicts_least_recently_used_and_respects_pins(tiny_dirs, b64_image):
    from rewarddance.backend.server.manager import estimate_bytes

    specs = {
        n: ModelSpec(n, str(tiny_dirs[f]), dtype="fp32", device="cpu")
        for n, f in (("a", "qwen2_vl"), ("b", "qwen2_5_vl"), ("c", "qwen3_vl"))
    }
    biggest = max(estimate_bytes(s)["cpu"] for s in specs.values())
    settings = ServerSettings(models=specs, cpu_memory=int(biggest * 1.5))  # room for one model at a time
    with ServerThread(create_app(settings)) as server:
        for name in ("a", "b"):
            assert (
                http("POST", server.url + "/v1/score", {"model": name, "prompt": "x", "images": [b64_image]})[0] == 200
            )
        loaded = [m["name"] for m in http("GET", server.url + "/v1/models")[1]["models"] if m["loaded"]]
        assert loaded == ["b"]  # a was evicted for b
        metrics = http("GET", server.url + "/metrics")[1]
        assert 'rewarddance_model_unloads_total{model="a",reason="evicted"} 1.0' in metrics
    specs = {n: ModelSpec(n, s.path, dtype="fp32", device="cpu", pinned=n == "a") for n, s in specs.items()}
    settings = ServerSettings(models=specs, cpu_memory=int(biggest * 1.5))
    with ServerThread(create_app(settings)) as server:
        assert http("POST", server.url + "/v1/models/a/load", b"")[0] == 200
        status, answer, _ = http("POST", server.url + "/v1/score", {"model": "b", "prompt": "x", "images": [b64_image]})
        assert status == 507 and answer["error"]["type"] == "insufficient_memory"
        assert "a" in [m["name"] for m in http("GET", server.url + "/v1/models")[1]["models"] if m["loaded"]]


def test_openapi_describes_every_route(served):
    spec = http("GET", served.url + "/openapi.json")[1]
    assert spec["openapi"].startswith("3.")
    for path in (
        "/v1/score",
        "/v1/compare",
        "/v1/rank",
        "/v1/tournament",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
    ):
        assert path in spec["paths"]
    assert "normalize" in spec["components"]["schemas"]["ScoreRequest"]["properties"]


def test_bearer_token(tiny_dirs, b64_image):
    settings = tiny_settings(tiny_dirs, token="s3cret-token")
    with ServerThread(create_app(settings)) as server:
        assert http("GET", server.url + "/health")[0] == 200
        assert http("GET", server.url + "/v1/models")[0] == 401
        status, answer, headers = http(
            "GET", server.url + "/v1/models", headers={"Authorization": "Bearer wrong-token"}
        )
        assert status == 401 and answer["error"]["type"] == "unauthorized" and headers["WWW-Authenticate"] == "Bearer"
        assert http("GET", server.url + "/v1/models", headers={"Authorization": "Bearer s3cret-token"})[0] == 200
        assert RewardClient(server.url, token="s3cret-token").score([random_image(32, 32)], "x").scores
        with pytest.raises(BackendError) as err:
            RewardClient(server.url, token="nope-nope").score([random_image(32, 32)], "x")
        assert err.value.status == 401


def test_mount_under_prefix_shares_a_loaded_model(reward_models, b64_image):
    """The routes attach under /rewarddance to another app and serve a model its host loaded."""
    from aiohttp import web

    rm = reward_models("qwen2_5_vl")
    from rewarddance.backend.server.manager import ModelManager

    settings = ServerSettings(models={})
    manager = ModelManager(settings)
    service = ScoringService(settings, manager)  # a host starts the service before any model is loaded
    with ServerThread(_mounted(service)) as server:
        status, answer, _ = http(
            "POST", server.url + "/rewarddance/v1/score", {"prompt": "a cat", "images": [b64_image]}
        )
        assert status == 404 and "no model" in answer["error"]["message"]
        assert http("GET", server.url + "/rewarddance/ready")[0] == 503
    manager.register("comfy", rm)
    host = web.Application()
    mount(host, service, "/rewarddance")
    table = web.RouteTableDef()
    mount(table, service, "/rd2")
    assert any(getattr(r, "path", "").startswith("/rd2/v1/score") for r in table)
    with ServerThread(host) as server:
        status, answer, _ = http(
            "POST", server.url + "/rewarddance/v1/score", {"prompt": "a cat", "images": [b64_image]}
        )
        assert status == 200 and answer["model"] == "comfy"
        assert manager.loaded["comfy"].model is rm
        assert http("POST", server.url + "/rewarddance/v1/models/comfy/unload", b"")[0] == 409
        assert "/rewarddance/v1/score" in http("GET", server.url + "/rewarddance/openapi.json")[1]["paths"]
        server.call(service.shutdown())


def test_rerank_through_the_backend_writes_the_local_ranking(served, photo_dir, tmp_path, capsys):
    from rewarddance.backend.cli import main

    remote, local = tmp_path / "remote.jsonl", tmp_path / "local.jsonl"
    assert (
        main(["rerank", str(photo_dir), "--prompt", "a cat", "--out", str(remote), "--quiet", "--backend", served.url])
        == 0
    )
    assert (
        main(
            [
                "rerank",
                str(photo_dir),
                "--prompt",
                "a cat",
                "--out",
                str(local),
                "--quiet",
                "--model",
                served_settings(served).models["qwen"].path,
                "--dtype",
                "fp32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )

    def rows(path):
        return {r["path"]: r["score"] for r in map(json.loads, path.read_text().splitlines())}

    got, want = rows(remote), rows(local)
    assert got.keys() == want.keys() and len(got) == 5
    for path in got:
        assert got[path] == pytest.approx(want[path], abs=1e-5)


def test_requests_with_the_same_reference_share_one_prefix(served, image_files, reward_models):
    """Concurrent compare requests against one reference, merged into a batch, compute its prefix once."""
    from rewarddance.backend.server.app import SERVICE_KEY

    rm = reward_models("qwen2_5_vl")
    reference = base64.b64encode(image_files[0].read_bytes()).decode()  # a 320 px photo: a long prefix
    candidates = [base64.b64encode(f.read_bytes()).decode() for f in image_files[5:11]]
    RewardClient(served.url).score([image_files[0]], "warm-up")  # the model is loaded
    scorer = served.app[SERVICE_KEY].manager.loaded["qwen"].model.scorer
    before = dict(scorer.stats)

    async def one(c, cand):
        body = c.body(None, prompt="a cat", candidates=[cand], reference=reference)
        return (await c.request("POST", "/v1/compare", body))["scores"][0]

    async def everyone():
        async with AsyncRewardClient(served.url) as c:
            return await asyncio.gather(*(one(c, cand) for cand in candidates))

    scores = asyncio.run(everyone())
    expected = rm.compare(image_files[5:11], image_files[0], "a cat").scores
    assert scores == pytest.approx(expected, abs=1e-5)
    prefixes = sum(scorer.stats[k] - before.get(k, 0) for k in ("prefix_forwards", "prefix_cache_hits"))
    forwards = scorer.stats["forwards"] - before.get("forwards", 0)
    assert 1 <= prefixes < len(candidates)  # shared across requests (run, or from the cross-call cache)
    assert forwards < len(candidates)


def _mounted(service):
    from aiohttp import web

    app = web.Application()
    mount(app, service, "/rewarddance")
    return app


def test_request_pixel_budget(tiny_dirs, b64_image):
    """Small bodies that decode to huge pixel counts are refused before they become tensors."""
    with ServerThread(create_app(tiny_settings(tiny_dirs, max_request_pixels=5000))) as server:
        status, answer, _ = http("POST", server.url + "/v1/score", {"prompt": "x", "images": [b64_image, b64_image]})
        assert status == 413 and answer["error"]["type"] == "too_many_pixels"
        assert http("POST", server.url + "/v1/score", {"prompt": "x", "images": [b64_image]})[0] == 200


def test_client_wraps_odd_error_bodies():
    from rewarddance.backend.client_requests import backend_error

    err = backend_error(502, b'{"error": "bad gateway"}')
    assert isinstance(err, BackendError) and err.status == 502 and "bad gateway" in err.message
    err = backend_error(409, b'{"error": {"type": "external_model", "message": "unload it there"}}')
    assert (err.status, err.type, err.message) == (409, "external_model", "unload it there")
    assert str(err) == "backend error 409 external_model: unload it there"


def test_both_clients_share_options_and_errors():
    """The async client takes the sync client's options, plus its connection limit."""
    sync = RewardClient("http://h:1/", token="t0k3n-abc", model="m", timeout=3, retries=2, backoff=0.5)
    aio = AsyncRewardClient("http://h:1/", token="t0k3n-abc", model="m", timeout=3, retries=2, connections=7)
    for c in (sync, aio):
        assert (c.url, c.token, c.model, c.timeout, c.retries) == ("http://h:1", "t0k3n-abc", "m", 3, 2)
        assert c.headers()["Authorization"] == "Bearer t0k3n-abc"
        assert str(c.timed_out("/v1/score")) == (
            "backend unreachable: http://h:1/v1/score: no answer within 3 s; "
            "raise the client timeout or send fewer images"
        )
        assert c.unreachable("refused").message == "http://h:1: refused; is `rewarddance serve` running there?"
    assert aio.connections == 7 and sync.delay(2, None) == 2.0 and sync.delay(0, "1.5") == 1.5
    with pytest.raises(ValueError, match="http://"):
        AsyncRewardClient("localhost:8765")
    positional = AsyncRewardClient("http://h:1", "tok", "m", 4, 1, 0.1, 3)  # the signature of earlier releases
    assert (positional.token, positional.model, positional.timeout, positional.connections) == ("tok", "m", 4, 3)


def test_large_calls_are_split_into_requests_under_the_body_limit(served, image_files, reward_models):
    """A call whose body would pass the server's limit goes as several requests; results stay in input order."""
    rm = reward_models("qwen2_5_vl")
    files = image_files[5:11]
    prompts = [f"prompt {i}" for i in range(len(files))]
    small = RewardClient(served.url, max_request_mb=0.02)  # about one image per request
    assert small.chunks([base64.b64encode(f.read_bytes()).decode() for f in files], prompts)[1][1] != prompts
    split = small.score(files, prompts)
    assert small.last_usage["requests"] > 1
    assert split.scores == pytest.approx(rm.score(files, prompts).scores, abs=1e-5)

    async def go():
        async with AsyncRewardClient(served.url, max_request_mb=0.02) as c:
            return await c.compare(files[1:], files[0], "a cat")

    assert asyncio.run(go()).scores == pytest.approx(rm.compare(files[1:], files[0], "a cat").scores, abs=1e-5)
