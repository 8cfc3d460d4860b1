"""Issue 16 items 3-5: web pages cannot drive the server, the environment token stays home, mounted heavy routes
need the token when the host listens beyond loopback.

Each test replays an attack (a cross-origin page, DNS rebinding, a form post, a token-collecting URL, a redirect
to another listener, an open ComfyUI) and asserts the refusal, its message and that the server kept working.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from helpers import ServerThread, png_b64, random_image

from rewarddance.backend.cli import build_parser, main, serve_settings
from rewarddance.backend.client import AsyncRewardClient, BackendError, RewardClient
from rewarddance.backend.config_files import env_token_for, token_host_allowed
from rewarddance.backend.server.app import ScoringService, create_app, mount
from rewarddance.backend.server.manager import ModelManager
from rewarddance.backend.server.settings import ServerSettings, SettingsError, settings_from_dict

from .server_helpers import tiny_settings

EVIL = "http://evil.example"
TOKEN = "s3cret-token"
REPO = Path(__file__).resolve().parents[2]


def run_client(app: web.Application, fn):
    """Run `await fn(client)` against `app` served by aiohttp's test server on 127.0.0.1."""

    async def go():
        async with TestClient(TestServer(app)) as client:
            return await fn(client)

    return asyncio.run(go())


async def answer(resp) -> tuple[int, dict, dict]:
    """(status, JSON body or {}, headers) of a test-client response."""
    body = await resp.json() if resp.content_type == "application/json" else {}
    return resp.status, body, dict(resp.headers)


def empty_app(**kw) -> web.Application:
    """The standalone app with no model configured (routes answer without loading anything)."""
    return create_app(ServerSettings(models={}, **kw))


def own(client) -> str:
    """The test server's own origin."""
    return f"http://127.0.0.1:{client.port}"


# --- item 3: Origin / Sec-Fetch-Site -----------------------------------------------------------------------------
def test_cross_origin_browser_requests_are_refused_with_the_flag_named():
    async def go(c):
        results = {}
        for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/models/qwen/unload")):
            for headers in ({"Origin": EVIL}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
                results[method, path, tuple(headers.items())] = await answer(
                    await c.request(method, path, headers={**headers, "Content-Type": "application/json"})
                )
        results["same-site"] = await answer(
            await c.get("/v1/models", headers={"Origin": "http://other.127.0.0.1", "Sec-Fetch-Site": "same-site"})
        )
        results["own"] = await answer(await c.get("/v1/models", headers={"Origin": own(c)}))
        results["same-origin"] = await answer(await c.get("/v1/models", headers={"Sec-Fetch-Site": "same-origin"}))
        results["typed"] = await answer(await c.get("/health", headers={"Sec-Fetch-Site": "none"}))
        results["after"] = await answer(await c.get("/health"))
        return results

    results = run_client(empty_app(), go)
    refused = {k: v for k, v in results.items() if isinstance(k, tuple)}
    assert len(refused) == 9
    for status, body, headers in [*refused.values(), results["same-site"]]:
        assert status == 403 and body["error"]["type"] == "origin_not_allowed"
        assert "--allow-origin" in body["error"]["message"] and "Access-Control-Allow-Origin" not in headers
    assert "--allow-origin http://evil.example" in refused["GET", "/health", (("Origin", EVIL),)][1]["error"]["message"]
    for key in ("own", "same-origin", "typed", "after"):
        assert results[key][0] == 200, (key, results[key])


def test_a_page_from_another_origin_cannot_unload_or_score(tiny_dirs):
    """The reproduced attack: a page on another origin unloaded the model and ran a job. Now both are 403."""
    b64 = png_b64(random_image(32, 32, seed=1))

    async def go(c):
        assert (await c.post("/v1/models/qwen/load", headers={"Content-Type": "application/json"})).status == 200
        page = {"Origin": EVIL, "Content-Type": "text/plain"}  # what fetch() sends without a preflight
        unload = await answer(await c.post("/v1/models/qwen/unload", data=b"", headers=page))
        score = await answer(await c.post("/v1/score", json={"prompt": "x", "images": [b64]}, headers={"Origin": EVIL}))
        models = await answer(await c.get("/v1/models"))
        ok = await answer(await c.post("/v1/score", json={"prompt": "x", "images": [b64]}))
        return unload, score, models, ok

    unload, score, models, ok = run_client(create_app(tiny_settings(tiny_dirs)), go)
    assert unload[0] == 403 and score[0] == 403 and score[1]["error"]["type"] == "origin_not_allowed"
    assert models[1]["models"][0]["loaded"] is True  # nothing was unloaded
    assert ok[0] == 200 and len(ok[1]["scores"]) == 1 and ok[1]["usage"]["queries"] == 1


def test_allowed_origins_get_cors_and_preflights_others_get_nothing():
    async def go(c):
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        return (
            await answer(await c.options("/v1/score", headers={"Origin": "http://localhost:3000", **pre})),
            await answer(await c.options("/v1/score", headers={"Origin": EVIL, **pre})),
            await answer(await c.get("/v1/models", headers={"Origin": "http://localhost:3000"})),
            await answer(await c.options("/v1/models/{name}/load".replace("{name}", "a"), headers={"Origin": own(c)})),
            await answer(await c.options("/health")),
        )

    allowed, evil, get, same, plain = run_client(empty_app(allow_origins=["HTTP://LocalHost:3000/"]), go)
    assert allowed[0] == 204
    assert allowed[2]["Access-Control-Allow-Origin"] == "http://localhost:3000" and allowed[2]["Vary"] == "Origin"
    assert allowed[2]["Access-Control-Allow-Methods"] == "OPTIONS, POST"
    assert allowed[2]["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert evil[0] == 403 and not any(h.startswith("Access-Control") for h in evil[2])
    assert get[0] == 200 and get[2]["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert same[0] == 204 and "Access-Control-Allow-Origin" not in same[2] and same[2]["Allow"] == "OPTIONS, POST"
    assert plain[0] == 204 and plain[2]["Allow"] == "GET, OPTIONS"

    async def star(c):
        return await answer(await c.get("/v1/models", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}))

    status, _, headers = run_client(empty_app(allow_origins=["*"]), star)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == EVIL


# --- item 3: Host names (DNS rebinding) ----------------------------------------------------------------------------
def host_statuses(app: web.Application, hosts: list[str]) -> dict[str, tuple[int, dict]]:
    """Status and body of GET /health for each Host header."""

    async def go(c):
        out = {}
        for host in hosts:
            status, body, _ = await answer(await c.get("/health", headers={"Host": host}))
            out[host] = (status, body)
        return out

    return run_client(app, go)


def test_only_loopback_host_names_by_default():
    got = host_statuses(
        empty_app(), ["attacker.example", "attacker.example:8765", "localhost:8765", "127.0.0.1", "[::1]:8765"]
    )
    for host in ("attacker.example", "attacker.example:8765"):
        status, body = got[host]
        assert status == 403 and body["error"]["type"] == "host_not_allowed"
        assert "--allow-host attacker.example" in body["error"]["message"]
    assert [got[h][0] for h in ("localhost:8765", "127.0.0.1", "[::1]:8765")] == [200, 200, 200]


def test_allow_host_and_the_bound_address():
    listed = host_statuses(empty_app(allow_hosts=["GPUBox.local"]), ["gpubox.local:8765", "attacker.example"])
    assert listed["gpubox.local:8765"][0] == 200 and listed["attacker.example"][0] == 403
    bound = host_statuses(empty_app(host="10.1.2.3", token=TOKEN), ["10.1.2.3:8765", "attacker.example"])
    assert bound["10.1.2.3:8765"][0] == 200 and bound["attacker.example"][0] == 403
    # a wildcard bind (it needs a token) without --allow-host answers every name; '*' does so explicitly
    for kw in ({"host": "0.0.0.0", "token": TOKEN}, {"allow_hosts": ["*"]}):
        assert host_statuses(empty_app(**kw), ["attacker.example"])["attacker.example"][0] == 200
    narrowed = host_statuses(empty_app(host="0.0.0.0", token=TOKEN, allow_hosts=["gpubox"]), ["attacker.example"])
    assert narrowed["attacker.example"][0] == 403


# --- item 3: Content-Type of state-changing routes -------------------------------------------------------------------
def test_post_bodies_must_be_json_or_multipart():
    async def go(c):
        out = {}
        for kind in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": kind} if kind else {}
            resp = await c.post(
                "/v1/score", data=b'{"prompt": "x", "images": []}', headers=headers, skip_auto_headers=["Content-Type"]
            )
            out[kind] = await answer(resp)
        out["no body"] = await answer(await c.post("/v1/models/ghost/load", skip_auto_headers=["Content-Type"]))
        out["empty form"] = await answer(
            await c.post("/v1/models/ghost/load", data=b"", headers={"Content-Type": "text/plain"})
        )
        out["json"] = await answer(await c.post("/v1/score", json={"prompt": "x", "images": []}))
        out["health"] = await answer(await c.get("/health"))
        return out

    out = run_client(empty_app(), go)
    for kind in ("text/plain", "application/x-www-form-urlencoded", None):
        status, body, _ = out[kind]
        assert status == 415 and body["error"]["type"] == "unsupported_media_type", kind
        assert "Content-Type: application/json" in body["error"]["message"]
    assert "'text/plain'" in out["text/plain"][1]["error"]["message"]
    # a POST without a body needs no particular Content-Type: these reach the manager (unknown model)
    assert out["no body"][0] == 404 and out["empty form"][0] == 404
    assert out["json"][0] == 400 and out["health"][0] == 200  # parsed (images must not be empty), still healthy


# --- item 3: flags and config --------------------------------------------------------------------------------------
def test_allow_flags_and_config_keys(tmp_path, capsys):
    args = build_parser().parse_args(
        ["serve", "--model", "a=/m/a", "--allow-origin", "http://LocalHost:3000/", "--allow-origin", "*"]
        + ["--allow-host", "GPUBOX.local", "--allow-host", "[fe80::1]"]
    )
    s = serve_settings(args)
    assert s.allow_origins == ["http://localhost:3000", "*"] and s.allow_hosts == ["gpubox.local", "fe80::1"]
    toml = tmp_path / "rd.toml"
    toml.write_text('allow_origins = ["https://app.example:443"]\nallow_hosts = "box"\n[models.a]\npath = "/m/a"\n')
    s = serve_settings(build_parser().parse_args(["serve", "--config", str(toml)]))
    assert s.allow_origins == ["https://app.example"] and s.allow_hosts == ["box"]
    s = serve_settings(build_parser().parse_args(["serve", "--config", str(toml), "--allow-host", "other"]))
    assert s.allow_hosts == ["other"]  # flags replace the file's list
    for argv, word in (
        (["--allow-origin", "evil.example"], "allow_origins (--allow-origin): give an origin as scheme://host"),
        (["--allow-origin", "http://x/path"], "http://x/path"),
        (["--allow-host", "box:8765"], "allow_hosts (--allow-host): give a host name"),
        (["--allow-host", "http://box"], "without scheme or port"),
    ):
        assert main(["serve", "--model", "a=/m/a", *argv]) == 2
        assert word in capsys.readouterr().err
    with pytest.raises(SettingsError, match="allow_origins .*list of strings"):
        settings_from_dict({"allow_origins": [1]}).validate(require_models=False)


# --- item 5: ComfyUI-mounted heavy routes ------------------------------------------------------------------------------
def mounted_app(
    token: str | None, require: bool, model=None, allow_origins=()
) -> tuple[web.Application, ScoringService]:
    """A host app with the routes mounted under /rewarddance (the tiny model registered as 'comfy' when given)."""
    settings = ServerSettings(models={}, token=token)
    service = ScoringService(settings, ModelManager(settings))
    if model is not None:
        service.manager.register("comfy", model)
    app = web.Application()
    mount(app, service, "/rewarddance", require_token_for_heavy=require, allow_origins=allow_origins)
    return app, service


HEAVY = [("POST", "/rewarddance/v1/score"), ("POST", "/rewarddance/v1/rank"), ("POST", "/rewarddance/v1/compare")]
HEAVY += [("POST", "/rewarddance/v1/tournament"), ("POST", "/rewarddance/v1/models/comfy/load")]
HEAVY += [("POST", "/rewarddance/v1/models/comfy/unload")]
READ_ONLY = ["/rewarddance/health", "/rewarddance/v1/models", "/rewarddance/metrics", "/rewarddance/openapi.json"]


def test_mounted_heavy_routes_need_the_token_when_the_host_is_exposed(reward_models):
    b64 = png_b64(random_image(32, 32, seed=2))
    body = {"prompt": "a cat", "images": [b64]}

    async def no_token(c):
        heavy = [await answer(await c.request(m, p, json=body)) for m, p in HEAVY]
        read = [(await c.get(p)).status for p in READ_ONLY]
        loaded = "comfy" in service.manager.loaded  # the open ComfyUI's model was not touched
        await service.shutdown()
        return heavy, read, loaded

    app, service = mounted_app(None, True, reward_models("qwen2_5_vl"))
    heavy, read, loaded = run_client(app, no_token)
    for status, answer_body, _ in heavy:
        assert status == 403 and answer_body["error"]["type"] == "token_required"
        assert "REWARDDANCE_TOKEN" in answer_body["error"]["message"]
    assert read == [200, 200, 200, 200] and loaded

    async def with_token(c):
        missing = await answer(await c.post("/rewarddance/v1/score", json=body))
        good = await answer(
            await c.post("/rewarddance/v1/score", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        )
        read = [(await c.get(p)).status for p in READ_ONLY]
        await service.shutdown()
        return missing, good, read

    app, service = mounted_app(TOKEN, True, reward_models("qwen2_5_vl"))
    missing, good, read = run_client(app, with_token)
    assert missing[0] == 401 and good[0] == 200 and len(good[1]["scores"]) == 1 and read == [200] * 4


def test_mounted_on_loopback_stays_open_but_refuses_other_origins():
    async def go(c):
        return (
            (await c.post("/rewarddance/v1/models/ghost/load")).status,
            await answer(await c.get("/rewarddance/v1/models", headers={"Host": "comfy.lan:8188"})),
            await answer(await c.get("/rewarddance/v1/models", headers={"Origin": EVIL})),
            await answer(await c.get("/rewarddance/v1/models", headers={"Origin": "http://localhost:5173"})),
        )

    app, _ = mounted_app(None, False, allow_origins=["http://localhost:5173"])
    load, other_host, evil, allowed = run_client(app, go)
    assert load == 404  # open: reaches the manager (unknown model)
    assert other_host[0] == 200  # the host application checks Host names itself
    assert evil[0] == 403 and evil[1]["error"]["type"] == "origin_not_allowed"
    assert allowed[0] == 200 and allowed[2]["Access-Control-Allow-Origin"] == "http://localhost:5173"


def load_service_module(monkeypatch, listen: str | None, cors: str | None = None):
    """nodes/service.py, freshly loaded, with a fake ComfyUI (`comfy.cli_args.args` and a PromptServer)."""
    if listen is not None:
        comfy, cli_args = types.ModuleType("comfy"), types.ModuleType("comfy.cli_args")
        cli_args.args = types.SimpleNamespace(listen=listen, enable_cors_header=cors)
        comfy.cli_args = cli_args
        monkeypatch.setitem(sys.modules, "comfy", comfy)
        monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    else:
        monkeypatch.setitem(sys.modules, "comfy", None)  # `import comfy` fails
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(routes=web.RouteTableDef(), loop=None))
    monkeypatch.setitem(sys.modules, "server", server)
    nodes_pkg = types.ModuleType("rewarddance.nodes")  # the real package imports ComfyUI; the module needs none
    nodes_pkg.__path__ = [str(REPO / "nodes")]
    monkeypatch.setitem(sys.modules, "rewarddance.nodes", nodes_pkg)
    spec = importlib.util.spec_from_file_location("rewarddance.nodes.service", REPO / "nodes" / "service.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "rewarddance.nodes.service", module)
    spec.loader.exec_module(module)
    return module, server.PromptServer.instance


@pytest.mark.parametrize(
    "listen,exposed",
    [("127.0.0.1", False), ("127.0.0.1,::1", False), ("localhost", False), ("0.0.0.0,::", True)]
    + [("192.168.1.5", True), ("127.0.0.1,0.0.0.0", True), (None, True)],
)
def test_nodes_read_comfyui_listen_address(monkeypatch, listen, exposed):
    service, _ = load_service_module(monkeypatch, listen)
    assert service.comfy_listens_beyond_loopback() is exposed


def test_nodes_mount_requires_the_token_when_comfyui_listens_beyond_loopback(monkeypatch):
    async def go(c):
        return (
            await answer(await c.post("/rewarddance/v1/models/x/load")),
            (await c.get("/rewarddance/v1/models")).status,
            await answer(await c.get("/rewarddance/health", headers={"Origin": "http://localhost:5173"})),
        )

    for env, expected in ((None, (403, "token_required")), ("short", (403, "token_required")), (TOKEN, (401, None))):
        if env is None:
            monkeypatch.delenv("REWARDDANCE_TOKEN", raising=False)
        else:
            monkeypatch.setenv("REWARDDANCE_TOKEN", env)
        service, host = load_service_module(monkeypatch, "0.0.0.0,::", cors="http://localhost:5173")
        service.attach()
        assert host.rewarddance_service.settings.token == (TOKEN if env == TOKEN else None)
        app = web.Application()
        app.router.add_routes(host.routes)
        load, models, cors = run_client(app, go)
        assert load[0] == expected[0] and models == 200
        if expected[1]:
            assert load[1]["error"]["type"] == expected[1]
        assert cors[2]["Access-Control-Allow-Origin"] == "http://localhost:5173"
    monkeypatch.setenv("REWARDDANCE_TOKEN", TOKEN)
    service, host = load_service_module(monkeypatch, "127.0.0.1")
    service.attach()
    assert host.rewarddance_service.settings.token is None  # loopback ComfyUI: mounted routes open as before
    app = web.Application()
    app.router.add_routes(host.routes)
    assert run_client(app, go)[0][0] == 404


# --- item 4: the environment token stays home ---------------------------------------------------------------------
def test_environment_token_goes_only_to_allowed_hosts(monkeypatch):
    monkeypatch.setenv("REWARDDANCE_TOKEN", TOKEN)
    monkeypatch.delenv("REWARDDANCE_TOKEN_HOSTS", raising=False)
    for url in ("http://127.0.0.1:8765", "http://localhost:9", "http://[::1]:1", "https://127.0.0.2"):
        assert env_token_for(url) == TOKEN, url
    for url in ("http://evil.example:8765", "http://192.168.1.5:8765", "http://127.0.0.1.evil.example"):
        assert env_token_for(url) is None, url
        assert RewardClient(url).token is None and "Authorization" not in RewardClient(url).headers()
        assert RewardClient(url, token="explicit-token").token == "explicit-token"  # the caller's choice
    monkeypatch.setenv("REWARDDANCE_TOKEN_HOSTS", "gpubox.local:8765, 10.0.0.7 ,[::1]:9")
    assert token_host_allowed("http://GPUBOX.local:8765/v1") and not token_host_allowed("http://gpubox.local:8766")
    assert token_host_allowed("http://10.0.0.7:1") and token_host_allowed("http://[::1]:9")
    assert not token_host_allowed("http://127.0.0.1:8765")  # the list replaces the loopback default
    monkeypatch.setenv("REWARDDANCE_TOKEN_HOSTS", "*")
    assert env_token_for("http://anything:1") == TOKEN
    monkeypatch.setenv("REWARDDANCE_TOKEN_HOSTS", "http://gpubox:8765")
    with pytest.raises(ValueError, match="REWARDDANCE_TOKEN_HOSTS: 'http://gpubox:8765' is not host or host:port"):
        RewardClient("http://gpubox:8765")


def recorder() -> tuple[web.Application, list[dict]]:
    """An app that records every request's headers and answers 401 like a server wanting a token."""
    seen: list[dict] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if "Authorization" not in request.headers:
            return web.json_response({"error": {"type": "unauthorized", "message": "missing token"}}, status=401)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    return app, seen


def test_token_withheld_from_a_url_typed_into_a_workflow(monkeypatch):
    """The reproduced leak: a Load Remote Reward Model node pointed at another listener received the operator's token."""
    monkeypatch.setenv("REWARDDANCE_TOKEN", TOKEN)
    monkeypatch.setenv("REWARDDANCE_TOKEN_HOSTS", "gpubox.local:8765")  # the listener below is not listed
    app, seen = recorder()
    with ServerThread(app) as other:
        with pytest.raises(BackendError) as err:
            RewardClient(other.url, retries=0).models()
        assert err.value.status == 401 and "REWARDDANCE_TOKEN is set but is not sent to 127.0.0.1:" in str(err.value)
        assert "REWARDDANCE_TOKEN_HOSTS" in str(err.value)

        async def aio():
            async with AsyncRewardClient(other.url, retries=0) as c:
                with pytest.raises(BackendError):
                    await c.models()

        asyncio.run(aio())
        assert len(seen) == 2 and not any("Authorization" in h for h in seen)
        assert RewardClient(other.url, token="explicit-token").models() == {"status": "ok"}
        assert seen[-1]["Authorization"] == "Bearer explicit-token"


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_no_client_follows_a_redirect_to_another_listener(code):
    """Both clients stop at a redirect: the second listener never sees a request, let alone the token."""
    app, seen = recorder()
    with ServerThread(app) as second:

        async def bounce(request: web.Request) -> web.Response:
            raise (
                web.HTTPFound(second.url + request.path) if code == 302 else _redirect(code, second.url + request.path)
            )

        first = web.Application()
        first.router.add_route("*", "/{tail:.*}", bounce)
        with ServerThread(first) as front:
            sync = RewardClient(front.url, token="explicit-token", retries=0)
            for call in (sync.models, lambda: sync.score([random_image(16, 16)], "x")):
                with pytest.raises(BackendError) as err:
                    call()
                assert err.value.status == code and err.value.type == "redirect"
                assert f"redirects to {second.url}/v1/" in err.value.message and "final URL" in err.value.message

            async def aio():
                async with AsyncRewardClient(front.url, token="explicit-token", retries=0) as c:
                    with pytest.raises(BackendError) as err:
                        await c.score([random_image(16, 16)], "x")
                    return err.value

            err = asyncio.run(aio())
            assert err.status == code and err.type == "redirect"
    assert seen == []


def _redirect(code: int, location: str) -> web.HTTPException:
    """The aiohttp exception of a redirect status."""
    kinds = {301: web.HTTPMovedPermanently, 307: web.HTTPTemporaryRedirect, 308: web.HTTPPermanentRedirect}
    return kinds[code](location)


# --- a real browser, when one is installed --------------------------------------------------------------------------
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed")
def test_headless_chromium_page_on_another_origin_is_refused(tmp_path):
    """A page on one port drives the API on another, as the attack did: a simple POST arrives and gets 403, a
    JSON POST stops at its refused preflight (the POST itself never arrives)."""
    app = empty_app()
    hits: list[tuple[str, str, int]] = []

    @web.middleware
    async def record(request, handler):
        response = await handler(request)
        hits.append((request.method, request.headers.get("Origin", ""), response.status))
        return response

    app.middlewares.append(record)
    with ServerThread(app) as api:
        script = (
            "const out = document.getElementById('out');"
            f"fetch('{api.url}/v1/models/qwen/unload', {{method: 'POST', mode: 'no-cors', body: 'x'}})"
            ".then(r => { out.textContent = 'simple:' + r.type;"
            f"  return fetch('{api.url}/v1/score', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},"
            "    body: JSON.stringify({prompt: 'x', images: []})}); })"
            ".then(r => out.textContent += ' json:' + r.status, e => out.textContent += ' json:blocked');"
        )
        page = f"<html><body><pre id=out>pending</pre><script>{script}</script></body></html>"

        async def serve_page(request: web.Request) -> web.Response:
            return web.Response(text=page, content_type="text/html")

        site = web.Application()
        site.router.add_get("/", serve_page)
        with ServerThread(site) as attacker:
            out = subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}"]
                + ["--virtual-time-budget=5000", "--dump-dom", attacker.url + "/"],
                capture_output=True,
                text=True,
                timeout=60,
            )
    assert "simple:opaque json:blocked" in out.stdout, out.stderr[-2000:]
    assert hits == [("POST", attacker.url, 403), ("OPTIONS", attacker.url, 403)]
